"""Help text every Beam stage's command shows. Here, not in beam_runner.py, because building the
parsers must not import Beam: `clipdata --help` stays instant."""

BEAM_OPTIONS_HELP = (
    "Any other --flag is passed to Apache Beam: --direct_num_workers N (local worker processes, "
    "0 = one per core), or --runner FlinkRunner/SparkRunner/DataflowRunner with that runner's options."
)
