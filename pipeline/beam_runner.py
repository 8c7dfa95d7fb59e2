"""One way to run every clipdata Beam job, locally or on a cluster.

Locally (no `--runner`) jobs run on Beam's in-process FnApiRunner. We pin it instead of leaving
the choice to the DirectRunner because since Beam 2.68 the DirectRunner first tries the Prism
runner, which downloads a Go binary and fails on a machine without internet. `--direct_num_workers
N` uses N local worker processes (`multi_processing` mode, so the GIL does not serialise them).

Any other Beam option is passed through untouched, so the same command runs on a cluster:

    clipdata queries build ... --runner=FlinkRunner --flink_master=host:8081 --environment_type=LOOPBACK
    clipdata curate ... --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp \
        --setup_file=./setup.py
"""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions


def _gave_flag(beam_args: list[str], name: str) -> bool:
    return any(arg == name or arg.startswith(name + "=") for arg in beam_args)


def pipeline_options(beam_args: list[str] | None = None) -> PipelineOptions:
    """PipelineOptions from the flags the user passed through, with our local defaults."""
    beam_args = list(beam_args or [])
    options = PipelineOptions(beam_args)
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers
    if (workers == 0 or workers > 1) and not _gave_flag(beam_args, "--direct_running_mode"):
        # Threads would share one GIL; several local workers only help as processes.
        direct.direct_running_mode = "multi_processing"
    return options


def uses_local_runner(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in (None, "FnApiRunner")


def make_pipeline(beam_args: list[str] | None = None) -> beam.Pipeline:
    """A Pipeline that runs in process unless the flags name a runner."""
    options = pipeline_options(beam_args)
    if uses_local_runner(options):
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        options.view_as(StandardOptions).runner = None
        return beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def counters(result) -> dict[str, int]:
    """Every Beam Metrics counter of a finished run, by name (summed over steps)."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        # committed is what the runner guarantees; some runners report only attempted.
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    return totals


def quiet_beam_logs() -> None:
    """Beam logs optional-dependency warnings (apitools, bigquery) that mean nothing locally."""
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
