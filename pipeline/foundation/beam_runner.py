"""One way to run every clipdata Beam job, locally or on a cluster.

Locally (no `--runner`) jobs run on Beam's in-process FnApiRunner. We pin it instead of leaving
the choice to the DirectRunner because since Beam 2.68 the DirectRunner first tries the Prism
runner, which downloads a Go binary and fails on a machine without internet. `--direct_num_workers
N` uses N local worker processes (`multi_processing` mode, so the GIL does not serialise them).

The local runner's time-based flushing of the data plane is switched off (see
_no_time_based_flush): in Beam (checked up to 2.77) it races with the thread writing the same
stream and drops or garbles elements of long bundles, which lost curated rows under
`--direct_running_mode multi_threading`.

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


def _no_time_based_flush() -> None:
    """Make the local runner flush its data plane streams by size only, never on a timer.

    Beam's TimeBasedBufferingClosableOutputStream (runners/worker/data_plane.py, 2.77) flushes
    from a PeriodicThread: under its lock it takes the buffer (get()), hands it to the gRPC send
    queue, then empties the buffer (_clear()); but write() takes no lock, so whatever the bundle's
    thread encodes in between (the send queue blocks when full) is cleared unsent. Elements go
    missing, or a cut mid-element shifts the stream and later elements decode as garbage. The
    FnApiRunner uses such streams, every 1000 ms (worker_handlers.DATA_BUFFER_TIME_LIMIT_MS), on
    its own side of every local run and in the in-process SDK workers of `multi_threading`
    mode, so a bundle that outputs for over a second can lose data: `clipdata curate` on a
    1M-row pool with 2 threads failed its row accounting in 3 of 8 runs (thousands of rows of
    one partition step missing from curated/ and dropped/ alike; once a KeepFirstCopy input
    that decoded as None). A pipeline of plain Beam transforms loses elements the same way.
    With 0 the streams are size-based (SizeBasedBufferingClosableOutputStream), flushed only by
    the thread that writes them, as SDK workers run by default on a cluster
    (sdk_worker_main: no `data_buffer_time_limit_ms` experiment, 0) and in multi_processing
    mode; a batch job loses nothing by it. EmbeddedGrpcWorkerHandler reads the constant as
    `config or DATA_BUFFER_TIME_LIMIT_MS`, so 0 cannot be asked for through the environment.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def make_pipeline(beam_args: list[str] | None = None) -> beam.Pipeline:
    """A Pipeline that runs in process unless the flags name a runner."""
    options = pipeline_options(beam_args)
    if uses_local_runner(options):
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        _no_time_based_flush()
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
    """Beam logs optional-dependency warnings (apitools, bigquery) that mean nothing locally
    (console.py: all of it shows with --verbose)."""
    from clipdata.pipeline.foundation import console

    if console.VERBOSE:
        return
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# A job service that is not there

ENDPOINT_TIMEOUT_S = 5.0
# runners that hand the job to a job service at --job_endpoint (Flink and Spark start their own
# when none is given)
_ENDPOINT_RUNNERS = ("PortableRunner", "FlinkRunner", "SparkRunner")


class EndpointUnreachable(Exception):
    """`--job_endpoint` names a job service nothing answers at: `endpoint` and `problem`."""

    def __init__(self, endpoint: str, problem: str):
        self.endpoint, self.problem = endpoint, problem
        super().__init__(f"no Beam job service answers at --job_endpoint {endpoint} ({problem}); start it "
                         "(e.g. Flink's or Spark's job server), correct the address, or leave out --runner to "
                         "run on this machine")


def check_job_endpoint(beam_args: list[str] | None, timeout: float = ENDPOINT_TIMEOUT_S) -> None:
    """Before a job writes anything: the job service `--job_endpoint` names accepts a connection
    (Beam itself waits 300 s and then fails with a gRPC traceback that never names it, after
    the stage has begun its outputs). "embed" and no endpoint need nothing."""
    import socket

    options = PipelineOptions(beam_args or [])
    runner = options.view_as(StandardOptions).runner or ""
    endpoint = options.get_all_options().get("job_endpoint")
    if not endpoint or endpoint == "embed" or not any(runner.endswith(r) for r in _ENDPOINT_RUNNERS):
        return
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]") or "localhost"
    if not port.isdigit():
        raise EndpointUnreachable(endpoint, "expected HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise EndpointUnreachable(endpoint, err.strerror or type(err).__name__) from None

