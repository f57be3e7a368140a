"""The registry type and the general validation helpers."""

from dataclasses import dataclass

import numpy as np
import pytest

from influent.data.registry import Registry
from influent.data.validate import InputError, check_choice, check_fitted, check_number, check_shape


@dataclass
class Entry:
    name: str
    title: str = ""


def test_registry_keeps_order_and_names_the_choices_of_an_unknown_name():
    reg = Registry("solver")
    reg.add(Entry("exact")), reg.add(Entry("cg"))
    assert list(reg) == ["exact", "cg"] and reg["cg"].name == "cg" and "cg" in reg and "x" not in reg
    with pytest.raises(InputError, match=r"^unknown solver 'lisa'; choose one of \['exact', 'cg'\]$"):
        reg["lisa"]
    with pytest.raises(KeyError):  # mapping code sees a KeyError too
        reg["lisa"]
    assert reg.get("lisa") is None
    with pytest.raises(ValueError, match="twice"):
        reg.add(Entry("cg"))
    assert reg.names(lambda e: e.name.startswith("e")) == ["exact"]


def test_registry_decorator_registers_the_built_entry():
    from influent.data.registry import Entry as RegEntry

    reg = Registry("suite")

    @reg.register("quick", title="Quick run")
    def run():
        """Runs fast."""
        return 1

    @reg.register("slow", lambda name, obj, **kw: Entry(name, obj.__name__))
    def other():
        return 2

    assert run() == 1 and isinstance(reg["quick"], RegEntry) and reg["quick"]() == 1
    assert (reg["quick"].title, reg["quick"].summary) == ("Quick run", "Runs fast.")
    assert reg["slow"].title == "other"


@pytest.mark.parametrize("value, kw, message", [
    (0, dict(low=0, low_open=True), r"must be a number in \(0, inf\], got 0"),
    (2.5, dict(kind=int, low=1), r"must be an integer in \[1, inf\], got 2.5"),
    ("nan", dict(), "must be a finite number"),
    (True, dict(kind=int), "must be an integer"),
    ("x", dict(), r"must be a number in \[-inf, inf\], got 'x'"),
    (1.0, dict(high=1, high_open=True), r"in \[-inf, 1\)"),
])
def test_check_number_refuses_out_of_range_and_non_numbers(value, kw, message):
    with pytest.raises(InputError, match=message):
        check_number(value, "rate", **kw)


def test_check_number_accepts_and_converts():
    assert check_number("3", "k", kind=int, low=1) == 3 and isinstance(check_number(2, "r"), float)
    assert check_number(None, "r", none=True) is None and check_number(1.0, "k", kind=int) == 1


def test_check_choice_fitted_and_shape():
    assert check_choice("cg", ("exact", "cg"), "solver") == "cg"
    with pytest.raises(InputError, match=r"^solver must be one of \['exact', 'cg'\], got 'x'$"):
        check_choice("x", ("exact", "cg"), "solver")

    class Model:
        fitted = False

    with pytest.raises(InputError, match="Model is not fitted; call .fit"):
        check_fitted(Model())
    X = np.zeros((4, 3))
    assert check_shape(X, (4, None), "X") is X
    with pytest.raises(InputError, match=r"^X has shape \(4, 3\), expected \(any, 2\)$"):
        check_shape(X, (None, 2), "X")
    with pytest.raises(InputError, match="expected"):
        check_shape(X, (4,), "X")


def test_a_choice_that_names_a_thing_has_the_registries_wording():
    reg = Registry("detector")
    reg.add(Entry("iforest")), reg.add(Entry("l2"))
    with pytest.raises(InputError) as from_registry:
        reg["svm"]
    with pytest.raises(InputError) as from_choice:
        check_choice("svm", ("iforest", "l2"), "detector", unknown="detector")
    assert str(from_registry.value) == str(from_choice.value) == "unknown detector 'svm'; choose one of ['iforest', 'l2']"


@pytest.mark.parametrize("value", [np.float32(2.5), np.bool_(True), "2.5", [3]])
def test_check_number_refuses_what_an_integer_cast_would_truncate(value):
    import torch

    with pytest.raises(InputError, match="must be an integer"):
        check_number(value, "k", kind=int)
    with pytest.raises(InputError, match="must be an integer"):
        check_number(torch.tensor(2.7), "k", kind=int)


def test_check_number_returns_plain_python_numbers():
    import torch

    for value, want in [(np.int64(4), 4), (torch.tensor(3), 3), (" 7 ", 7), (np.float64(3.0), 3)]:
        got = check_number(value, "k", kind=int)
        assert got == want and type(got) is int
    assert type(check_number(np.float32(0.5), "r")) is float
