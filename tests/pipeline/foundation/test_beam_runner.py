import time

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from apache_beam.testing.util import assert_that, equal_to

from clipdata.pipeline.foundation import beam_runner


def test_local_default_is_the_in_process_runner_not_prism():
    p = beam_runner.make_pipeline([])
    assert type(p.runner).__name__ == "FnApiRunner"
    with p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))


def test_several_local_workers_run_as_processes():
    options = beam_runner.pipeline_options(["--direct_num_workers", "2"])
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    explicit = beam_runner.pipeline_options(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert explicit.view_as(DirectOptions).direct_running_mode == "multi_threading"


def test_cluster_options_pass_through():
    options = beam_runner.pipeline_options(
        ["--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=LOOPBACK"]
    )
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.get_all_options()["flink_master"] == "host:8081"
    assert not beam_runner.uses_local_runner(options)


def test_counters_are_read_back():
    from apache_beam.metrics import Metrics

    counter = Metrics.counter("test", "seen")

    def count(x):
        counter.inc()
        return x

    p = beam_runner.make_pipeline([])
    _ = p | beam.Create(range(5)) | beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    assert beam_runner.counters(result)["seen"] == 5


def test_worker_threads_lose_no_output(monkeypatch):
    """Beam's timed data-plane flush clears what a bundle writes while it sends (see
    beam_runner._no_time_based_flush). Its period cut from 1000 ms to 1 ms, this job lost
    elements in 5 runs of 5 unless make_pipeline switched the flush off."""
    from apache_beam.metrics import Metrics
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1)
    emitted = Metrics.counter("test", "emitted")

    def emit_for_a_while(_):
        end, n = time.time() + 0.3, 0
        while time.time() < end:
            for _ in range(50):
                yield n % 3, bytes(2000)
                n += 1
        emitted.inc(n)

    p = beam_runner.make_pipeline(["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
    received = Metrics.counter("test", "received")
    _ = (p | beam.Create([0, 1]) | beam.Reshuffle() | beam.FlatMap(emit_for_a_while) | beam.GroupByKey()
         | beam.Map(lambda kv: received.inc(sum(1 for _ in kv[1]))))
    result = p.run()
    result.wait_until_finish()
    counts = beam_runner.counters(result)
    assert counts["emitted"] > 1000 and counts["received"] == counts["emitted"]


def test_a_job_endpoint_nothing_answers_at_fails_at_once_naming_it(tmp_path, capsys):
    import socket
    import time

    from clipdata.pipeline import cli

    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"127.0.0.1:{port}"
    started = time.time()
    for command in (["download", "--input", str(tmp_path / "pairs.parquet")],
                    ["curate", "--pool", str(tmp_path / "pool.parquet"), "--queries", str(tmp_path / "q.txt")]):
        out = tmp_path / command[0]
        assert cli.main([*command, "--output", str(out), "--runner", "PortableRunner",
                         "--job_endpoint", endpoint, "--environment_type", "LOOPBACK"]) == 2
        err = capsys.readouterr().err
        assert f"no Beam job service answers at --job_endpoint {endpoint}" in err and "Traceback" not in err
        assert not out.exists()   # nothing half-written
    assert time.time() - started < 30   # not Beam's 300 s wait
