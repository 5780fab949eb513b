"""Names that hold end to end (issue 13): every metric name vfbench builds (resized copies for small sample
counts, I3D preset suffixes, the 64-px protocol) is accepted by ``evaluate --metrics``, and every fix an error
suggests names a metric that exists."""

from __future__ import annotations

import pytest

from vfbench.errors import UsageError
from vfbench.metrics.protocols import (PROTOCOLS, REAL_SIZES, check_metric_name, fitting_metric, get_spec,
                                       protocol_metrics)
from vfbench.pipeline import metric_specs


@pytest.mark.parametrize("num", [None, 8, 16, 100])
def test_every_name_the_pipeline_builds_is_accepted(num):
    for protocol in PROTOCOLS:
        for dataset in ("shapes", "ucf101", "taichi"):
            for size in (None, *REAL_SIZES):
                for spec in metric_specs(protocol_metrics(protocol, dataset, size), num):
                    assert check_metric_name(spec.name) == spec.name
                    got = get_spec(spec.name)
                    assert (got.kind, got.extractor, got.num_fake, got.num_real, got.resolution, got.trials) == (
                        spec.kind, spec.extractor, spec.num_fake, spec.num_real, spec.resolution, spec.trials)


def test_resized_and_preset_names():
    spec = get_spec("fvd16_16f_64-stylegan-v")
    assert (spec.num_fake, spec.num_real, spec.resolution, spec.preset) == (16, 16, 64, "stylegan-v")
    assert spec.published_count == 2048
    assert get_spec("is_shapes8").num_real == 0 and get_spec("is_shapes8").num_fake == 8
    for bad in ("fvd1_16f", "fvd016_16f", "fvd_shapes8-tats", "fvd16_16g"):
        with pytest.raises(UsageError, match="unknown metric"):
            check_metric_name(bad)


def test_suggested_fixes_name_existing_metrics():
    from vfbench.evaluation import count_warning

    for name in ("fvd2048_16f", "kvd256_16f", "fvd2048_16f-tats", "is2048_ucf_tganv2", "fvd16_16f"):
        spec = get_spec(name)
        other = fitting_metric(spec, 64)
        assert other is not None and check_metric_name(other) == other and get_spec(other).resolution == 64
        assert check_metric_name(spec.at_count(100).name)  # "score the clips there are with --metrics ..."
    assert fitting_metric(get_spec("fvd2048_16f"), 32) is None
    assert count_warning(get_spec("fvd2048_16f")) is None
    assert "fewer than the 2048 its protocol publishes" in count_warning(get_spec("fvd16_16f"))


def test_cli_evaluate_accepts_a_resized_name(tmp_path, capsys):
    from vfbench.cli import main

    with pytest.raises(SystemExit) as ei:  # accepted by name: the failure is the missing run, not the metric
        main(["evaluate", "nope", "--metrics", "fvd16_16f", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert ei.value.code != 0 and "unknown metric" not in err and "nope" in err
    with pytest.raises(SystemExit) as ei:
        main(["evaluate", "nope", "--metrics", "fvd16_16g", "--results", str(tmp_path)])
    assert ei.value.code == 2 and "unknown metric 'fvd16_16g'" in capsys.readouterr().err
