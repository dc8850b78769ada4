"""``python -m benchmarks`` end to end on the tiny preset: the files it writes and the fields they hold (no timing checks)."""

from __future__ import annotations

import json

import pytest

from benchmarks.commands import main
from benchmarks.harness import STAGES


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(["--preset", "tiny", "--device", "cpu", "--reps", "2", "--warmup", "0", "--budgets", "16,78,512",
                 "--camera", "64x48", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_writes_json_markdown_and_png(bench_run):
    assert (bench_run / "bench-tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((bench_run / "bench-tiny.json").read_text())
    assert report["schema"] == "lightvla-bench/1"
    assert {"cpu", "torch", "torch_threads", "device"} <= set(report["machine"])
    assert report["run"]["reps"] == 2 and report["run"]["command"]
    assert report["inputs"]["num_patches"] == 512 and report["inputs"]["camera_shape"] == [48, 64]
    names = [s["name"] for s in report["scenarios"]]
    assert names == ["unpruned", "authors-unpruned", "lightvla", "k16", "k78", "authors-k78", "k512"]


def test_every_scenario_has_counts_flops_and_stage_timings(bench_run):
    report = json.loads((bench_run / "bench-tiny.json").read_text())
    for s in report["scenarios"]:
        assert s["sequence_length"] > s["kept"] >= 1
        assert {*STAGES, "lm_head", "total", "sequence_length", "num_kept"} <= set(s["flops"])
        assert s["flops"]["num_kept"] == s["kept"] and s["flops"]["sequence_length"] == s["sequence_length"]
        for key in (*STAGES, "forward", "preprocess", "e2e", "other"):
            t = s["timings_ms"][key]
            assert t["n"] == 2 and t["p10"] <= t["median"] <= t["p90"]
            assert len(s["samples_ms"][key]) == 2
    by_name = {s["name"]: s for s in report["scenarios"]}
    assert by_name["k78"]["kept"] == 78 and by_name["unpruned"]["flops"]["pruner"] == 0
    assert "lm_head" in by_name["authors-k78"]["timings_ms"]


def test_ratios_targets_and_roofline_are_reported(bench_run):
    report = json.loads((bench_run / "bench-tiny.json").read_text())
    r = report["ratios"]
    assert 0 < r["llm_pruned_over_unpruned"]["predicted"] < 1
    assert {"measured", "predicted", "deviation"} <= set(r["forward_pruned_over_unpruned"])
    assert {"forward", "e2e"} <= set(r["speedup_over_authors_k78"])
    assert [t["name"] for t in report["targets"]][:3] == ["LLM-stage latency ratio vs FLOPs ratio",
                                                         "end-to-end (forward) latency ratio vs FLOPs ratio",
                                                         "pruner share of the pruned forward"]
    devices = {row["device"] for row in report["roofline"]["rows"]}
    assert {"h100", "h20", "rtx4090", "agx-orin", "orin-nx"} <= devices
    assert set(report["roofline"]["jetson"]) == {"agx-orin", "orin-nx"}
    fractions = report["model"]["flops_fraction_vs_7b"]
    assert {"this_unpruned", "7b_unpruned", "this_k78", "7b_k78"} == set(fractions)


def test_markdown_puts_counts_next_to_every_number(bench_run):
    text = (bench_run / "bench-tiny.md").read_text()
    assert "| scenario | kept | seq | vision | projector | pruner | LLM |" in text
    assert "| k78 | 78 | " in text and "Roofline floors" in text and "Jetson" in text
    assert "AMD" in text or "Intel" in text or "cpu" in text.lower()


def test_analytic_only_handles_the_full_7b_without_building_it(tmp_path, capsys):
    assert main(["--preset", "7b", "--analytic-only", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| unpruned | 512 |" in text and "| k78 | 78 |" in text
    report = json.loads((tmp_path / "bench-7b-analytic.json").read_text())
    unpruned = report["flops"][0]
    assert 8.5e12 < unpruned["total"] < 9.2e12  # the paper's 8.8 T


def test_full_7b_preset_refuses_the_cpu_with_a_clear_message(tmp_path, capsys):
    assert main(["--preset", "7b", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs a GPU" in capsys.readouterr().err
