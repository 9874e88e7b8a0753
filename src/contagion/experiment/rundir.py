"""The file names of a run directory, in one place.

A run directory (``contagion run CONFIG --out RUN_DIR``) holds the store and everything later commands
write beside it. Every module that reads or writes one of these files takes its name from
:class:`RunDir`; nothing else spells them out. The run's config is not a file: it lives in the store
(:meth:`contagion.experiment.store.Store.config`).

::

    RUN_DIR/
      store.sqlite          the games (contagion run)
      run.lock              the one writer's lock (contagion run)
      report.html           contagion report
      viewer.html           contagion view
      validation.json       contagion check --out RUN_DIR (the report states these figures)
      games.jsonl|parquet   contagion export
      attention/            contagion attention (the report reads attention.csv)
        attention.csv  attention.parquet  attention.png
"""

from __future__ import annotations

from pathlib import Path


class RunDir:
    """A run directory and the paths of its files (nothing is created or read here)."""

    STORE = "store.sqlite"
    LOCK = "run.lock"
    """The writer's lock file (``contagion run`` holds an advisory lock on it; the file itself stays)."""
    REPORT = "report.html"
    VIEWER = "viewer.html"
    VALIDATION = "validation.json"
    ATTENTION_DIR = "attention"
    """The attention read-out's default output directory, where the report looks for it."""
    ATTENTION_CSV = "attention.csv"
    ATTENTION_PARQUET = "attention.parquet"
    ATTENTION_PNG = "attention.png"
    """The names of the attention read-out's files, inside whatever directory it writes to."""
    EXPORT_FORMATS = ("jsonl", "parquet")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def store(self) -> Path:
        return self.path / self.STORE

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def viewer(self) -> Path:
        return self.path / self.VIEWER

    @property
    def validation(self) -> Path:
        return self.path / self.VALIDATION

    @property
    def attention_dir(self) -> Path:
        return self.path / self.ATTENTION_DIR

    @property
    def attention_csv(self) -> Path:
        """The attention table the report reads (``RUN_DIR/attention/attention.csv``)."""
        return self.attention_dir / self.ATTENTION_CSV

    def export(self, fmt: str) -> Path:
        """``RUN_DIR/games.<fmt>``: the default target of ``contagion export``."""
        return self.path / f"games.{fmt}"

    def holds_run(self) -> bool:
        """Whether the directory holds a store (it may still be empty or foreign)."""
        return self.store.exists()

    @classmethod
    def attention_files(cls, directory: Path) -> dict[str, Path]:
        """The attention read-out's three files in ``directory``, by name."""
        return {name: directory / name for name in (cls.ATTENTION_CSV, cls.ATTENTION_PARQUET, cls.ATTENTION_PNG)}

    @classmethod
    def attention_beside(cls, record_file: Path) -> Path:
        """The default attention output for one game record file: ``STEM-attention`` beside it."""
        return record_file.with_name(f"{record_file.stem}-{cls.ATTENTION_DIR}")
