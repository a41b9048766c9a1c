"""convmixer.book.tables: the one text-table printer of the chapters and the benchmarks."""
import pytest

from convmixer.book.tables import format_table, human, text_table


def test_right_aligned_table():
    assert text_table(["p", "tokens"], [[1, 1024], [16, 4]]).split("\n") == [
        " p  tokens", "--  ------", " 1    1024", "16       4"]


def test_left_aligned_table_pads_every_column():
    """The benchmark reports' layout: cells padded on the right, the last column too."""
    assert text_table(["a", "bb"], [["xyz", 1]], align="left").split("\n") == ["a    bb", "---  --", "xyz  1 "]


def test_bad_rows_and_alignment_are_refused():
    with pytest.raises(ValueError, match="row 2 has 1 cells for 2 columns"):
        text_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="align"):
        text_table(["a"], [[1]], align="centre")
    with pytest.raises(ValueError, match="no rows"):
        format_table([])


def test_format_table_picks_columns_and_formats():
    rows = [{"n": 1234567, "name": "a"}, {"n": 12, "name": "bcd"}]
    assert format_table(rows, [("name", "what"), ("n", "count")], {"n": human}).split("\n") == [
        "what  count", "----  -----", "   a  1.23M", " bcd     12"]
    assert format_table(rows).split("\n")[0] == "      n  name"


def test_human():
    assert [human(x) for x in (999, 1000, 1234567, 2.5e9, 0.5)] == ["999", "1K", "1.23M", "2.5G", "0.5"]
