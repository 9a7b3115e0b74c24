"""The same batch on a Dask cluster (a LocalCluster of two worker processes) fills the store
with the same results as a local run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import distributed
import pytest

from imgscan.batch.store import Store

from .batchstore import make_store, run_cli, summary_json


def _comparable(db: Path) -> dict[str, tuple[Any, ...]]:
    """Each done result's summary columns and report, less what differs from run to run (how
    long the scan took, where the image was)."""
    found = {}
    with Store(db) as store:
        for record in store.records():
            if record.state != "done":
                continue
            report = store.report(record.key)
            assert report is not None
            # Times (the scan's, and any per-stage ones) differ from run to run; sizes do not.
            report["stats"] = {k: report["stats"][k] for k in ("files", "bytes")}
            report["stats"].pop("stages", None)  # timings too
            report["image"].pop("path")
            report.pop("sysprep_command")  # names the image's path
            found[record.key.digest] = (
                record.key,
                record.complete,
                record.counts,
                record.exposures,
                record.files,
                record.bytes,
                json.dumps(report, sort_keys=True),
            )
    return found


def test_dask_batch_stores_what_a_local_batch_stores(
    scanned_store: dict[str, Any],
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    signatures: Path,
) -> None:
    store = make_store(images, tmp_path / "store")
    db = tmp_path / "dask.sqlite"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        code, out, _ = run_cli(
            capsys, signatures, "batch", str(store), "--db", str(db), "--scheduler",
            cluster.scheduler_address, "--jobs", "1", "--summary-format", "json", "-q",
        )  # fmt: skip
    assert code == 1
    assert {i["status"] for i in summary_json(out)["images"]} == {"scanned"}
    remote = _comparable(db)
    local = _comparable(scanned_store["db"])  # the same two images, scanned locally
    assert len(remote) == 2
    assert remote == local
    with Store(db) as stored:
        workers = {r.worker for r in stored.records()}
    assert all(w is not None and w.startswith("tcp://") for w in workers)
