"""Property-based tests (hypothesis): for *any* npz content, config value, YAML text or file
bytes, the package either works or raises a CpscError (the CLI's "exit 2 with a message") -
never another exception, which the CLI would show as a traceback."""

import dataclasses
import io
import zipfile

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from cpsc_lite import CpscError, checkpoint  # noqa: E402
from cpsc_lite.config import DistillConfig, TeacherConfig, parse_value  # noqa: E402
from cpsc_lite.methods import make_config  # noqa: E402
from cpsc_lite.data import load_dataset  # noqa: E402

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

DTYPES = st.sampled_from(
    [np.uint8, np.int8, np.int16, np.uint16, np.int64, np.uint64, np.float32, np.bool_]
)
SIDE = st.sampled_from([0, 1, 3, 8, 9, 12])


def image_arrays():
    shapes = st.one_of(
        st.tuples(st.integers(0, 6), SIDE, SIDE),
        st.tuples(st.integers(0, 6), SIDE, SIDE, st.sampled_from([1, 2, 3, 4])),
        st.tuples(st.integers(0, 6)),
        st.tuples(st.integers(0, 3), SIDE, SIDE, st.integers(1, 3), st.integers(1, 2)),
    )
    return hnp.arrays(DTYPES, shapes)


def label_arrays():
    small = hnp.arrays(
        np.int64, st.tuples(st.integers(0, 6)), elements=st.integers(-2, 6)
    )
    anything = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6))
    huge = hnp.arrays(
        np.int64, st.tuples(st.integers(1, 4)), elements=st.integers(-(2**62), 2**62)
    )
    return st.one_of(small, anything, huge)


@st.composite
def npz_contents(draw):
    arrays = {}
    for key, strategy in (
        ("x_test", image_arrays()),
        ("y_test", label_arrays()),
        ("x_train", image_arrays()),
        ("y_train", label_arrays()),
    ):
        if key.endswith("test") and draw(st.booleans()) or draw(st.integers(0, 3)) == 0:
            arrays[key] = draw(strategy)
    if draw(st.integers(0, 4)) == 0:
        arrays["class_names"] = draw(
            st.one_of(
                hnp.arrays(
                    hnp.unicode_string_dtypes(max_len=4), st.tuples(st.integers(0, 7))
                ),
                hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=4)),
            )
        )
    # Coherent cases too, so that some of them load: n images, n labels in 0..k-1.
    if draw(st.booleans()):
        n = draw(st.integers(1, 8))
        arrays["x_test"] = draw(hnp.arrays(np.uint8, (n, 8, 8)))
        arrays["y_test"] = np.array(
            draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64
        )
    return arrays


@FUZZ
@given(npz_contents())
def test_any_npz_loads_or_says_why(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("fuzz") / "d.npz"
    np.savez(path, **arrays)
    try:
        bundle = load_dataset(f"npz:{path}")
    except CpscError:
        return
    # Loaded: then it is a real dataset, with labels exactly 0..K-1.
    assert bundle.num_classes >= 2
    for split in (bundle.train, bundle.test):
        if split is not None:
            assert split.images.shape[1:] == (
                bundle.channels,
                bundle.img_size,
                bundle.img_size,
            )
            assert (
                0 <= int(split.labels.min())
                and int(split.labels.max()) < bundle.num_classes
            )
    assert len(bundle.class_names) == bundle.num_classes


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_any_bytes_as_npz_or_checkpoint_say_why(tmp_path_factory, data, as_zip):
    folder = tmp_path_factory.mktemp("bytes")
    path = folder / "d.npz"
    if as_zip:  # a real zip whose members are arbitrary bytes
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x_test.npy", data)
            z.writestr("y_test.npy", data[::-1])
        data = buf.getvalue()
    path.write_bytes(data)
    with pytest.raises(CpscError):
        load_dataset(f"npz:{path}")
    (folder / "t.pt").write_bytes(data)
    with pytest.raises(CpscError):
        checkpoint.load(str(folder / "t.pt"), kind="teacher")


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
DISTILL_KEYS = [f.name for f in dataclasses.fields(DistillConfig) if f.name != "method"]
TEACHER_KEYS = [f.name for f in dataclasses.fields(TeacherConfig)]


@FUZZ
@given(st.dictionaries(st.sampled_from(DISTILL_KEYS + ["not_a_key"]), JUNK, max_size=4))
def test_any_config_values_validate_or_say_why(values):
    try:
        cfg = make_config("cpsc", **values)
    except CpscError:
        return
    # accepted means usable
    assert (
        cfg.budget.iters >= 1
        and cfg.budget.batch_size >= 1
        and cfg.optim.lr_generator > 0
    )


@FUZZ
@given(st.text(max_size=12))
def test_any_set_text_parses_or_says_why(text):
    try:
        value = parse_value(text)
    except CpscError:
        return
    for key in ("lr_generator", "iters", "use_scl", "bn_reduce", "generator_betas"):
        try:
            make_config("cpsc", **{key: value})
        except CpscError:
            pass


@FUZZ
@given(st.dictionaries(st.sampled_from(TEACHER_KEYS), JUNK, max_size=3))
def test_any_teacher_config_validates_or_says_why(values):
    try:
        TeacherConfig(**values)
    except CpscError:
        pass


META = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["cnn_small", "nope"]), JUNK),
        "num_classes": st.one_of(st.integers(-1, 12), JUNK),
        "channels": st.one_of(st.integers(0, 4), JUNK),
        "img_size": st.one_of(st.sampled_from([2, 8, 9]), JUNK),
        "mean": JUNK,
        "std": JUNK,
        "class_names": JUNK,
    },
)


@FUZZ
@given(META, st.sampled_from(["teacher", "student", "generator", "resume", "other"]))
def test_any_checkpoint_metadata_is_checked_before_use(tmp_path_factory, meta, kind):
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    torch.save(
        dict(
            format="cpsc_lite", kind=kind, state_dict={"w": torch.zeros(1)}, meta=meta
        ),
        path,
    )
    from cpsc_lite.teacher import load_classifier

    try:
        load_classifier(str(path), kind="teacher")
    except CpscError:
        pass
