import gzip

import numpy
import pytest

from dnn import data


@pytest.mark.parametrize("make,classes", [(data.make_circles, 2), (data.make_moons, 2),
                                          (data.make_xor, 2), (data.make_spirals, 3)])
def test_generators_are_seeded_and_balanced(make, classes):
    x1, y1 = make(300, seed=4)
    x2, y2 = make(300, seed=4)
    x3, _ = make(300, seed=5)
    numpy.testing.assert_array_equal(x1, x2)
    assert not numpy.array_equal(x1, x3)
    assert x1.shape == (300, 2) and y1.shape == (300,) and y1.dtype == numpy.int64
    assert numpy.bincount(y1).tolist() == [300 // classes] * classes


def test_circles_geometry():
    x, y = data.make_circles(1000, factor=0.5, noise=0.0, seed=0)
    r = numpy.hypot(x[:, 0], x[:, 1])
    numpy.testing.assert_allclose(r[y == 0], 1.0)
    numpy.testing.assert_allclose(r[y == 1], 0.5)


def test_student_features_and_targets():
    x, y = data.make_student(500, seed=1)
    assert x.shape == (500, 3) and set(numpy.unique(y)) == {0, 1}
    assert x[:, 0].min() >= 0 and x[:, 0].max() <= 30
    assert x[:, 1].min() >= 0 and x[:, 1].max() <= 120
    assert x[:, 2].min() >= 0 and x[:, 2].max() <= 15
    _, score = data.make_student(500, regression=True, seed=1)
    assert score.dtype == numpy.float64 and 0 <= score.min() and score.max() <= 100
    numpy.testing.assert_array_equal(score >= 50, y.astype(bool))
    # more lectures, more homework, fewer disconnections -> higher scores
    corr = [numpy.corrcoef(x[:, j], score)[0, 1] for j in range(3)]
    assert corr[0] > 0.2 and corr[1] > 0.2 and corr[2] < -0.1


def test_train_test_split_partitions():
    x = numpy.arange(100).reshape(50, 2)
    y = numpy.arange(50) % 2
    xtr, xte, ytr, yte = data.train_test_split(x, y, test_size=0.2, seed=0)
    assert len(xte) == 10 and len(xtr) == 40
    assert sorted(numpy.concatenate([xtr[:, 0], xte[:, 0]]).tolist()) == list(range(0, 100, 2))
    numpy.testing.assert_array_equal(xtr[:, 0] // 2 % 2, ytr)
    _, _, _, yte = data.train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    assert numpy.bincount(yte).tolist() == [5, 5]
    with pytest.raises(ValueError, match="test_size"):
        data.train_test_split(x, y, test_size=1.5)


def test_standardizer_fits_on_train_only():
    rng = numpy.random.default_rng(0)
    train = rng.normal(5, 3, (200, 3))
    train[:, 2] = 7.0  # a constant feature must not divide by zero
    test = rng.normal(5, 3, (50, 3))
    s = data.Standardizer().fit(train)
    t = s.transform(train)
    numpy.testing.assert_allclose(t[:, :2].mean(0), 0, atol=1e-12)
    numpy.testing.assert_allclose(t[:, :2].std(0), 1)
    assert (t[:, 2] == 0).all()
    numpy.testing.assert_allclose(s.inverse_transform(s.transform(test)), test)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        s.transform(test[:, :2])


def test_one_hot_and_label_encoding():
    numpy.testing.assert_array_equal(data.one_hot(numpy.array([2, 0]), 3),
                                     [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        data.one_hot(numpy.array([2]), 2)
    codes, classes = data.encode_labels(["pass", "fail", "pass"])
    assert codes.tolist() == [1, 0, 1] and classes.tolist() == ["fail", "pass"]


def test_load_csv_with_header_and_string_target(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("lectures,homework,result\n21,90,pass\n3,10,fail\n15,60,pass\n")
    x, y = data.load_csv(path, target="result")
    numpy.testing.assert_array_equal(x, [[21, 90], [3, 10], [15, 60]])
    assert y.tolist() == [1, 0, 1]
    _, y_last = data.load_csv(path)  # default: the last column
    assert y_last.tolist() == [1, 0, 1]
    numeric = tmp_path / "n.csv"
    numeric.write_text("21,90,1\n3,10,0\n")
    x, y = data.load_csv(numeric, target=0)
    assert y.tolist() == [21, 3] and y.dtype == numpy.int64 and x.shape == (2, 2)
    with pytest.raises(ValueError, match="'nope'"):
        data.load_csv(path, target="nope")


def test_load_csv_rejects_non_numeric_features_with_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\nx,3\n")
    with pytest.raises(ValueError, match="line 3, column a: expected a finite number; "
                                         "got 'x'"):
        data.load_csv(path, target="b")


@pytest.mark.parametrize("cell", ["", "NA", "nan", " "])
def test_a_missing_value_names_its_line_and_column(tmp_path, cell):
    path = tmp_path / "gap.csv"
    path.write_text(f"age,height,label\n30,1.7,a\n41,{cell},b\n25,1.8,a\n")
    with pytest.raises(ValueError, match="line 3, column height: expected a finite number; "
                                         "got a missing value"):
        data.load_csv(path)
    path.write_text("age,label\n30,a\n41,\n")
    with pytest.raises(ValueError, match="line 3, column label \\(the target\\): expected a "
                                         "label; got a missing value"):
        data.load_csv(path)


def test_the_delimiter_is_detected_and_a_wrong_one_gets_a_hint(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("size;weight;kind\n1,5;2;big\n0,5;1;small\n")  # decimal commas too
    table = data.read_csv(path)
    assert table.delimiter == ";" and table.feature_names == ["size", "weight"]
    path.write_text("size;weight;kind\n1.5;2;big\n0.5;1;small\n")
    table = data.read_csv(path)
    numpy.testing.assert_array_equal(table.x, [[1.5, 2.0], [0.5, 1.0]])
    assert table.target_name == "kind" and table.class_names == ["big", "small"]
    assert table.y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="expected at least two columns .* separated by ','; "
                                         "got one; the file looks ';'-separated: pass "
                                         "delimiter=';'"):
        data.load_csv(path, delimiter=",")


def test_a_headerless_table_names_columns_by_position(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,2,0\n3,4,1\n")
    table = data.read_csv(path)
    assert table.feature_names == ["column 0", "column 1"] and table.target_name == "column 2"
    assert table.class_names is None


def test_load_npz(tmp_path):
    numpy.savez(tmp_path / "d.npz", x=numpy.ones((3, 2)), labels=numpy.arange(3))
    x, y = data.load_npz(tmp_path / "d.npz", y_key="labels")
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="'y'"):
        data.load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_mnist_layout(tmp_path, gz):
    rng = numpy.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=numpy.uint8)
    labels = rng.integers(0, 10, 5).astype(numpy.uint8)
    suffix = ".gz" if gz else ""
    data.write_idx(tmp_path / f"images.idx{suffix}", images)
    data.write_idx(tmp_path / f"labels.idx{suffix}", labels)
    numpy.testing.assert_array_equal(data.load_idx(tmp_path / f"images.idx{suffix}"), images)
    numpy.testing.assert_array_equal(data.load_idx(tmp_path / f"labels.idx{suffix}"), labels)


def test_idx_hand_written_header_and_errors(tmp_path):
    # The MNIST label header written by hand: magic 0x00000801, count 3.
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    (tmp_path / "l.idx.gz").write_bytes(gzip.compress(raw))
    assert data.load_idx(tmp_path / "l.idx.gz").tolist() == [7, 2, 1]
    (tmp_path / "short.idx").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="expected 3 data bytes"):
        data.load_idx(tmp_path / "short.idx")
    (tmp_path / "junk.idx").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="magic"):
        data.load_idx(tmp_path / "junk.idx")


def test_decimal_commas_in_a_semicolon_file_do_not_confuse_the_delimiter(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("1,5;2,5;0\n0,5;1,25;1\n2,0;3,0;0\n")  # as many commas as semicolons
    table = data.read_csv(path)
    assert table.delimiter == ";" and table.feature_names == ["column 0", "column 1"]
    numpy.testing.assert_array_equal(table.x, [[1.5, 2.5], [0.5, 1.25], [2.0, 3.0]])
    assert table.y.tolist() == [0, 1, 0]  # no row was taken for a header


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffa,b,label\n1,2,x\n3,4,y\n".encode("utf-8"))
    assert data.read_csv(path).feature_names == ["a", "b"]
    assert data.csv_columns(path) == (["a", "b", "label"], 3)


def test_a_headerless_file_with_text_labels_keeps_its_first_row(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("5.1,3.5,setosa\n7.0,3.2,versicolor\n6.3,3.3,virginica\n")
    table = data.read_csv(path)
    assert table.x.shape == (3, 2) and table.class_names == ["setosa", "versicolor",
                                                             "virginica"]
    assert data.csv_columns(path) == (None, 3)


def test_class_names_give_a_file_of_some_classes_the_models_codes(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("w,kind\n1,small\n2,small\n")
    assert data.read_csv(path).y.tolist() == [0, 0]  # sorted codes of this file alone
    table = data.read_csv(path, class_names=["big", "small"])
    assert table.y.tolist() == [1, 1] and table.class_names == ["big", "small"]
    with pytest.raises(ValueError, match=r"line 2, column kind \(the target\): expected one "
                                         r"of the classes \['big', 'medium'\]; got 'small'"):
        data.read_csv(path, class_names=["big", "medium"])


def test_the_encoding_is_found_in_blocks_as_it_would_be_whole(tmp_path, monkeypatch):
    """The file is checked against its encoding block by block (any size): a character
    cut by a block's end is no error, and a bad byte is named on its line."""
    from dnn.data import io

    monkeypatch.setattr(io, "_BLOCK_BYTES", 7)
    lines = ["prix,taille,boisson"] + [f"{i}.5,{i},thé" for i in range(40)]
    path = tmp_path / "utf8.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    assert data.read_csv(path).notes == [] and data.read_csv(path).class_names == ["thé"]
    lines[30] = lines[30].replace("thé", "caf\xe9")
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8").replace(b"caf\xc3\xa9",
                                                                        b"caf\xe9"))
    assert data.read_csv(path).notes == ["utf8.csv is not UTF-8 (byte 0xe9 on line 31): "
                                         "read as cp1252; encoding= (--encoding) names another"]
    with pytest.raises(ValueError, match=r"line 31: byte 0xe9 is not utf-8"):
        data.read_csv(path, encoding="utf-8")
    path.write_bytes("a,b\r\n1,2\r\n".encode("utf-16"))  # its byte-order mark says so
    assert data.read_csv(path).y.tolist() == [2]


def test_a_target_error_names_a_file_and_column_with_braces(tmp_path):
    path = tmp_path / "runs{1}.csv"
    path.write_text("x,{label}\n1,a\n2,\n")
    with pytest.raises(ValueError, match=r"runs\{1\}.csv' line 3, column \{label\} \(the "
                                         r"target\): expected a label; got a missing value"):
        data.read_csv(path)
