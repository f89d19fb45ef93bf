"""`songserve load` profiles: validation with clear errors, and weighted choices."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from serve.load import LoadProfile, ProfileError, load_profile, parse_profile
from serve.schemas import SongRequest


def test_default_profile_is_30_s_two_variations_auto_no_lora() -> None:
    profile = load_profile(None)
    rng = random.Random(0)
    bodies = [profile.draw(rng) for _ in range(50)]
    for body in bodies:
        SongRequest.model_validate(body)  # what the API accepts
        assert body["duration_s"] == 30 and body["variations"] == 2 and body["model"] == "auto"
        assert "lora" not in body and "style" not in body and body["prompt"]
    assert len({b["seed"] for b in bodies}) == 50
    assert len({b["prompt"] for b in bodies}) > 1


def test_weighted_choices_follow_their_weights(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(
        "duration_s: [{value: 20, weight: 3}, {value: 60, weight: 1}]\n"
        "variations: 1\n"
        "model: [auto, sketch]\n"
        "lora_ids: [{value: null, weight: 4}, {value: my-lora, weight: 1}]\n"
        "styles: [null, 'dark techno, driving']\n"
        "prompts: ['rain on the harbour']\n"
    )
    profile = load_profile(path)
    rng = random.Random(5)
    bodies = [profile.draw(rng) for _ in range(4000)]
    for body in bodies[:200]:
        SongRequest.model_validate(body)
    durations = Counter(b["duration_s"] for b in bodies)
    assert set(durations) == {20, 60}
    assert durations[20] / len(bodies) == pytest.approx(0.75, abs=0.03)
    models = Counter(b["model"] for b in bodies)
    assert models["sketch"] / len(bodies) == pytest.approx(0.5, abs=0.03)
    loras = [b["lora"] for b in bodies if "lora" in b]
    assert len(loras) / len(bodies) == pytest.approx(0.2, abs=0.03)
    assert loras[0] == {"id": "my-lora", "scale": 1.0}
    assert {b["variations"] for b in bodies} == {1}
    # Same seed, same songs.
    again = random.Random(5)
    assert [profile.draw(again) for _ in range(20)] == bodies[:20]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"duration_s": 700}, r"duration_s\.0\.value: Input should be less than or equal to 600"),
        ({"variations": [{"value": 5}]}, r"variations\.0\.value: .*less than or equal to 4"),
        ({"durations": 30}, r"durations: Extra inputs are not permitted"),
        ({"model": []}, r"model: .*empty: give at least one value"),
        ({"styles": [{"value": "x", "weight": 0}]}, r"styles\.0\.weight: .*greater than 0"),
        ({"prompts": [{"value": "x", "wieght": 2}]}, r"prompts\.0\.wieght: Extra inputs"),
        ([1, 2], r"a profile is a mapping of fields"),
    ],
)
def test_invalid_profiles_name_the_file_and_field(data: object, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected) as raised:
        parse_profile(data, "mix.yaml")
    assert str(raised.value).startswith("mix.yaml: ")


def test_profile_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"--profile .*missing\.yaml: no such file"):
        load_profile(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("duration_s: [30\n")
    with pytest.raises(ProfileError, match=r"broken\.yaml: not valid YAML"):
        load_profile(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_profile(empty) == LoadProfile()
