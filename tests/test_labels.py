import pytest

from runtime.errors import DataError
from runtime.labels import multi_hot, read_ids, read_labels


def write(tmp_path, text, name="train.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_targets_sorted(tmp_path):
    path = write(tmp_path, "Id,Target\na,16 0\nb,5\n")
    assert read_labels(path) == {"a": [0, 16], "b": [5]}
    y = multi_hot(list(read_labels(path).values()))
    assert y.shape == (2, 28) and y[0, 0] == y[0, 16] == 1 and y.sum() == 3


def test_bom_and_crlf_are_accepted(tmp_path):
    path = write(tmp_path, "\ufeffId,Target\r\na,1 2\r\nb,27\r\n")
    assert read_labels(path) == {"a": [1, 2], "b": [27]}


@pytest.mark.parametrize("row, message", [
    ("a,28", r"line 2: label 28 outside 0\.\.27"),
    ("a,-1", r"label -1 outside"),
    ("a,x", r"label 'x' is not a number"),
    ("../a,1", r"unsafe"),
    ("a/b,1", r"unsafe"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, f"Id,Target\n{row}\n")
    with pytest.raises(DataError, match=message) as err:
        read_labels(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_duplicate_id(tmp_path):
    path = write(tmp_path, "Id,Target\na,1\nb,2\na,3\n")
    with pytest.raises(DataError, match="line 4: duplicate Id a"):
        read_labels(path)


def test_missing_columns_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="expected columns Id, Target"):
        read_labels(write(tmp_path, "Image,Label\na,1\n"))
    with pytest.raises(DataError, match="missing file"):
        read_labels(tmp_path / "nope.csv")


def test_read_ids_of_a_sample_submission(tmp_path):
    path = write(tmp_path, "Id,Predicted\nb,0\na,0\n", "sample_submission.csv")
    assert read_ids(path) == ["b", "a"]
