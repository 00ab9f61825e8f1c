"""The streaming benchmark (bench/streaming.py) runs and records its rows, in a tiny
configuration; its timings are the lead's to take on a quiet machine, never asserted."""
import json

from support import python


def test_the_streaming_bench_records_every_row(tmp_path):
    out = tmp_path / "stream.json"
    proc = python("-m", "dnn.bench.streaming", "--model", "tiny", "--batch", "8", "--steps",
                  "3", "--repeats", "1", "--gb", "0.0001", "--tmp", str(tmp_path), "--out",
                  str(out), env={"DNN_BACKEND": "numpy"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert [row["row"] for row in record["rows"]] == ["arrays", "generator", "sequence",
                                                      "memmap"]
    for row in record["rows"]:
        assert row["samples_per_s"] > 0 and len(row["epoch_s"]) == 2
        assert row["batch_bytes"] == 8 * 2 * 4 and "anon_growth_bytes" in row
    assert record["rows"][0]["ratio_to_arrays"] == 1.0
    assert "memmap" in proc.stdout and "x arrays" in proc.stdout
    assert list(tmp_path.iterdir()) == [out]  # the memmap's file is gone
