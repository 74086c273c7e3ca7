"""Nothing in a spec or a store runs code: what a malicious spec or a planted artifact is refused with.

Run with ``pytest -k malicious`` (with the other fault tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from freshloop.clock import SimulatedClock
from freshloop.errors import SpecError
from freshloop.loop import Loop
from freshloop.spec import load_spec, load_spec_dict
from freshloop.train.model import import_estimator

from .conftest import make_frame, spec_dict


@pytest.mark.parametrize("path", ["sklearn.datasets._rcv1.GzipFile", "sklearn.utils.Bunch",
                                  "river.stream.iter_csv", "sklearn.preprocessing.FunctionTransformer"])
def test_malicious_estimator_paths_under_allowed_packages_are_refused(path: str) -> None:
    """A prefix of an allowed package is not enough: the class must be an estimator (fit and predict)."""
    with pytest.raises(SpecError, match="an estimator class") as e:
        import_estimator(path)
    assert e.value.field == "model.estimator" and e.value.value == path


@pytest.mark.parametrize("path", ["sklearn.linear_model.LogisticRegression",
                                  "sklearn.ensemble.HistGradientBoostingRegressor", "river.forest.ARFClassifier",
                                  "river.linear_model.LinearRegression"])
def test_estimators_of_the_allowed_packages_are_built(path: str) -> None:
    assert import_estimator(path).__name__ == path.rpartition(".")[2]


@pytest.mark.slow
def test_malicious_spec_cannot_open_a_file_at_check_or_tick(tmp_path: Path) -> None:
    """GzipFile under sklearn.datasets truncated the file its params named at ``tick``. ``check`` refuses the
    spec as ``tick`` does, and the file is untouched."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    d = spec_dict(tmp_path / "store", model={"estimator": "sklearn.datasets._rcv1.GzipFile",
                                             "params": {"filename": str(victim), "mode": "wb"}})
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(d))
    done = subprocess.run([sys.executable, "-m", "freshloop.cli", "check", str(tmp_path / "loop.yaml")],
                          capture_output=True, text=True, timeout=120)
    message = " ".join(done.stderr.split())
    assert done.returncode != 0 and "an estimator class" in message and "_rcv1.GzipFile" in message, message
    loop = Loop(load_spec_dict(d), clock=SimulatedClock(299.0), durable=False)
    loop.ingest(make_frame(300), source="t", batch_id="warm")
    with pytest.raises(SpecError, match="an estimator class"):
        loop.tick()
    assert victim.read_text() == "keep me"


class _Planted:
    """A pickle that writes a file when it is loaded: what an attacker with write access to the database and
    the store's files would plant as a model."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.path, "code ran"))


@pytest.mark.slow
def test_malicious_artifact_planted_in_the_store_is_never_unpickled(tmp_path: Path) -> None:
    """The planted pickle has the right sha256 (the attacker wrote that too) and is made the champion. Nothing
    runs it: `freshloop models` reads only the metadata, and `promote`, a server's start or a loop opening
    refuse an artifact not signed with the artifact key, which the store does not hold."""
    import hashlib
    import pickle

    from freshloop.errors import IntegrityError
    from freshloop.registry import Registry
    from freshloop.store import open_stores

    d = spec_dict(tmp_path / "store")
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(d))
    loop = Loop(load_spec_dict(d), clock=SimulatedClock(299.0), durable=False)
    loop.ingest(make_frame(300), source="t", batch_id="warm")
    assert loop.tick().promoted
    loop.close()
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Planted(marker))
    sha = hashlib.sha256(data).hexdigest()
    meta, blobs = open_stores(tmp_path / "store")
    blobs.put_bytes(f"artifacts/sha256/{sha[:2]}/{sha}", data)
    planted = meta.versions.add(run_id="r-evil", verdict_id=None, artifact_sha256=sha,
                                artifact_path=f"artifacts/sha256/{sha[:2]}/{sha}", artifact_hmac="0" * 64,
                                lineage={}, created_at=1.0).version
    meta.versions.move_alias("champion", planted, expected_revision=meta.versions.alias("champion")[1],
                             actor="evil", reason="planted", at=2.0)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freshloop.cli", *args], capture_output=True, text=True,
                              timeout=120)

    listed = cli("models", str(tmp_path / "loop.yaml"))
    assert listed.returncode == 0 and str(planted) in listed.stdout, listed.stderr
    history = cli("history", str(tmp_path / "loop.yaml"))
    assert history.returncode == 0 and "events" in history.stdout, history.stderr
    promoted = cli("promote", str(tmp_path / "loop.yaml"), "1", "--reason", "back")  # opens the loop: loads it
    message = " ".join(promoted.stderr.split())
    assert promoted.returncode == 1 and "not signed with this machine's artifact key" in message, message
    with pytest.raises(IntegrityError, match="not signed"):
        Registry(meta, blobs).load(planted)
    meta.close()
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("root", ["../elsewhere", "/etc/freshloop-malicious"])
def test_malicious_store_root_outside_the_spec_folder_needs_a_flag(tmp_path: Path, root: str) -> None:
    folder = tmp_path / "spec"
    folder.mkdir()
    d = {**spec_dict(tmp_path), "store": {"root": root}}
    (folder / "loop.yaml").write_text(yaml.safe_dump(d))
    done = subprocess.run([sys.executable, "-m", "freshloop.cli", "check", str(folder / "loop.yaml")],
                          capture_output=True, text=True, timeout=120)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "store.root" in message and "outside the spec's folder" in message, message
    assert not Path(root).is_absolute() or not Path(root).exists()
    if not Path(root).is_absolute():  # asked for, it is allowed
        (folder / "loop.yaml").write_text(yaml.safe_dump({**d, "store": {"root": root, "outside_spec_folder": True}}))
        assert load_spec(folder / "loop.yaml").store.root == str((tmp_path / "elsewhere").resolve())


@pytest.mark.slow
def test_a_store_root_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    d = {**spec_dict(tmp_path), "store": {"root": "a-file/store"}}
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "rows.csv").write_text("x1,x2,c,y\n1,2,a,1\n")
    done = subprocess.run([sys.executable, "-m", "freshloop.cli", "ingest", str(tmp_path / "loop.yaml"),
                           str(tmp_path / "rows.csv")], capture_output=True, text=True, timeout=120)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "store.root" in message and "cannot be written" in message, message
    assert "Traceback" not in done.stderr
