"""The C2PA chain and key reach the signing replicas inside their bound config, read once by the
builder: replicas on any node sign without the builder's disk, and nothing the dashboard shows
(the config file's `args:`, each deployment's options) or any dump of the config holds the key."""

from __future__ import annotations

import gc
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.deployment import deployment_to_schema
from ray.serve.schema import ServeDeploySchema

from deployments.post_processor import DeliveryChain, Provenance, song_credentials
from pipeline.encode import encode_audio
from pipeline.provenance import prompt_sha256, read_credentials
from serve.app import build_app
from serve.certs import (
    SigningAlgorithm,
    private_signing_files,
    with_signing_chain,
    write_dev_chain,
)
from serve.config import (
    AppConfig,
    C2paConfig,
    PostProcessConfig,
    app_args_from_serve_config,
    load_serve_config,
    resolve_config,
)
from tests.helpers import REPO

MASK = "**********"


def _bound(app: Application) -> dict[str, Any]:
    """Deployment name → its bound Deployment, for every deployment reachable from `app`."""
    found: dict[str, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, Application):
            deployment = value._bound_deployment
            if deployment.name not in found:
                found[deployment.name] = deployment
                for arg in (*deployment.init_args, *deployment.init_kwargs.values()):
                    visit(arg)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(app)
    return found


def _local_args(data_dir: Path) -> dict[str, Any]:
    args = app_args_from_serve_config(load_serve_config(REPO / "config" / "local.yaml"))
    args["storage"]["data_dir"] = str(data_dir)
    return args


def _key_body(key_pem: str) -> str:
    """A line from the middle of a PEM key: what a leak would contain."""
    return key_pem.strip().splitlines()[1]


def _chain(directory: Path, algorithm: SigningAlgorithm = "es256") -> tuple[str, str]:
    write_dev_chain(directory / "chain.pem", directory / "signer.key", algorithm=algorithm)
    return (directory / "chain.pem").read_text(), (directory / "signer.key").read_text()


def test_the_builder_reads_the_chain_once_and_only_signers_get_it(tmp_path: Path) -> None:
    app = call_user_app_builder_with_args_if_necessary(build_app, _local_args(tmp_path))
    deployments = _bound(app)
    chain = (tmp_path / "certs" / "chain.pem").read_text()  # the dev chain the builder wrote
    key = (tmp_path / "certs" / "signer.key").read_text()
    for name in ("PostProcessor", "StemMaker"):
        config = deployments[name].init_args[0]
        assert isinstance(config, PostProcessConfig), name
        assert config.c2pa.cert_pem is not None and config.c2pa.key_pem is not None
        assert config.c2pa.cert_pem.get_secret_value() == chain, name
        assert config.c2pa.key_pem.get_secret_value() == key, name
    # The ingress and the conductor get the paths only: no key in replicas that do not sign.
    for name in ("SongAPI", "Conductor"):
        config = deployments[name].init_args[0]
        assert isinstance(config, AppConfig), name
        assert config.postprocess.c2pa.key_pem is None, name


def test_a_replica_signs_without_the_builders_disk(tmp_path: Path) -> None:
    app = call_user_app_builder_with_args_if_necessary(build_app, _local_args(tmp_path))
    bound = _bound(app)["PostProcessor"].init_args[0]
    shutil.rmtree(tmp_path / "certs")  # another node: the builder's files are not there

    chain = DeliveryChain(bound)
    t = np.arange(48_000) / 48_000
    audio = np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    provenance = Provenance(
        title="far away",
        seed=1,
        prompt_sha256=prompt_sha256("x"),
        created="2025-06-01T12:00:00+00:00",
    )
    credentials = song_credentials(
        provenance, model="sketch", model_version="1", loudness_lufs=-14.0
    )
    signed, status = chain.sign({"wav": encode_audio(audio, 48_000, "wav")}, credentials)
    assert status == {"signed": True, "formats": ["wav"]}
    report = read_credentials(signed["wav"], "wav")
    assert report["valid"] is True, report


def test_what_the_dashboard_shows_never_holds_the_key(tmp_path: Path) -> None:
    serve_config = load_serve_config(REPO / "config" / "local.yaml")
    args = _local_args(tmp_path)
    serve_config["applications"][0]["args"] = args
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    key = (tmp_path / "certs" / "signer.key").read_text()
    secret = _key_body(key)
    # GET /api/serve/applications/: deployed_app_config is the submitted config file, and each
    # deployment's deployment_config is its options (DeploymentSchema), never its init args.
    assert secret not in ServeDeploySchema.model_validate(serve_config).model_dump_json()
    for name, deployment in _bound(app).items():
        shown = deployment_to_schema(deployment).model_dump_json(exclude_unset=True)
        assert secret not in shown, name
    # A signer's bound config masks the key in every dump and in its repr.
    bound = _bound(app)["PostProcessor"].init_args[0]
    assert bound.model_dump(mode="json")["c2pa"]["key_pem"] == MASK
    assert bound.model_dump(mode="json")["c2pa"]["cert_pem"] == MASK
    for text in (bound.model_dump_json(), repr(bound), str(bound.model_dump(mode="json"))):
        assert secret not in text and "PRIVATE KEY" not in text


def test_a_whole_config_with_a_key_dumps_masked() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
    config = AppConfig.model_validate({"postprocess": {"c2pa": {"key_pem": key}}})
    assert config.postprocess.c2pa.key_pem is not None
    assert config.postprocess.c2pa.key_pem.get_secret_value() == key
    dumped = config.model_dump(mode="json")
    assert dumped["postprocess"]["c2pa"]["key_pem"] == MASK
    for text in (config.model_dump_json(), repr(config), str(dumped)):
        assert "TOPSECRETKEYMATERIAL" not in text


def test_the_chain_can_come_from_the_environment_instead_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, key = _chain(tmp_path / "vault")
    # One-line values, as many secret stores and .env files hold them.
    monkeypatch.setenv("SONGSERVE_POSTPROCESS__C2PA__CERT_PEM", chain.strip().replace("\n", "\\n"))
    monkeypatch.setenv("SONGSERVE_POSTPROCESS__C2PA__KEY_PEM", key)
    data_dir = tmp_path / "data"
    app = call_user_app_builder_with_args_if_necessary(build_app, _local_args(data_dir))
    bound = _bound(app)["PostProcessor"].init_args[0]
    assert bound.c2pa.cert_pem.get_secret_value() == chain
    assert bound.c2pa.key_pem.get_secret_value() == key
    assert not (data_dir / "certs").exists()  # no development chain next to a given one
    for name in ("SongAPI", "Conductor"):  # still only the signers hold the key
        assert _bound(app)[name].init_args[0].postprocess.c2pa.key_pem is None, name


def test_a_bad_environment_key_is_named_but_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, _ = _chain(tmp_path / "vault")
    monkeypatch.setenv("SONGSERVE_POSTPROCESS__C2PA__CERT_PEM", chain)
    monkeypatch.setenv("SONGSERVE_POSTPROCESS__C2PA__KEY_PEM", "hunter2-not-a-key")
    with pytest.raises(ValueError, match="SONGSERVE_POSTPROCESS__C2PA__KEY_PEM") as caught:
        call_user_app_builder_with_args_if_necessary(build_app, _local_args(tmp_path / "data"))
    assert "hunter2" not in str(caught.value)
    # The same value straight through the config's validation: accepted (normalised only), so
    # pydantic never prints it as an input value.
    config = resolve_config({"storage": {"data_dir": str(tmp_path / "data")}})
    assert config.postprocess.c2pa.key_pem is not None
    assert "hunter2" not in repr(config)


def test_a_key_that_is_not_the_chains_is_refused(tmp_path: Path) -> None:
    chain, _ = _chain(tmp_path / "a")
    _, other_key = _chain(tmp_path / "b")
    with pytest.raises(ValueError, match="does not belong to the chain's first"):
        with_signing_chain(C2paConfig(cert_pem=SecretStr(chain), key_pem=SecretStr(other_key)))


def test_an_algorithm_that_does_not_fit_the_key_is_refused(tmp_path: Path) -> None:
    chain, key = _chain(tmp_path, algorithm="es256")
    with pytest.raises(ValueError, match=r"algorithm es384 does not fit .*secp256r1"):
        with_signing_chain(
            C2paConfig(cert_pem=SecretStr(chain), key_pem=SecretStr(key), algorithm="es384")
        )


def test_a_missing_file_names_the_setting_and_the_fixes(tmp_path: Path) -> None:
    config = C2paConfig(cert_path=str(tmp_path / "no.pem"), key_path=str(tmp_path / "no.key"))
    with pytest.raises(ValueError, match=r"postprocess\.c2pa\.cert_path: cannot read") as caught:
        with_signing_chain(config)
    assert "songserve certs dev" in str(caught.value)
    assert "SONGSERVE_POSTPROCESS__C2PA__CERT_PEM" in str(caught.value)


def test_signers_get_private_copies_removed_with_their_owner(tmp_path: Path) -> None:
    chain, key = _chain(tmp_path)
    loaded = with_signing_chain(C2paConfig(cert_pem=SecretStr(chain), key_pem=SecretStr(key)))

    class Owner:
        pass

    owner = Owner()
    files = private_signing_files(loaded, owner)
    cert_path, key_path = Path(files.cert_path), Path(files.key_path)
    assert cert_path.read_text() == chain and key_path.read_text() == key
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    del owner
    gc.collect()
    assert not key_path.parent.exists()
