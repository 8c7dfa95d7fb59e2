"""`clipdata inspect`: a sample's entries named from the curate run's entry_counts.parquet, with
their language when the list was worldwide."""
import pyarrow as pa
import pyarrow.parquet as pq

from clipdata.pipeline.inspect import inspect_key


def test_entries_carry_their_language_from_a_worldwide_run(tmp_path):
    pq.write_table(pa.table({"entry_id": pa.array([0, 1, 2], pa.int32()), "entry": ["dog", "Hund", "猫"],
                             "matched": [5, 3, 2], "kept": [4, 3, 2], "language": ["en", "de", "zh"]}),
                   str(tmp_path / "entry_counts.parquet"))
    assert inspect_key._entries_of(str(tmp_path), [1, 2]) == [
        {"id": 1, "entry": "Hund", "pairs_matched": 3, "pairs_kept": 3, "language": "de"},
        {"id": 2, "entry": "猫", "pairs_matched": 2, "pairs_kept": 2, "language": "zh"}]


def test_one_list_has_no_language(tmp_path):
    pq.write_table(pa.table({"entry_id": pa.array([0], pa.int32()), "entry": ["dog"], "matched": [5], "kept": [4]}),
                   str(tmp_path / "entry_counts.parquet"))
    assert inspect_key._entries_of(str(tmp_path), [0]) == [{"id": 0, "entry": "dog", "pairs_matched": 5, "pairs_kept": 4}]
