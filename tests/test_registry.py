import pytest

from lamp_bench.harness.registry import POLICIES, SUITES, Registry, UnknownNameError, load_builtin_entries

PAPER_POLICIES = {"lamp", "openvla", "no-motion", "ungated", "steps-1", "steps-5", "steps-10",
                  "midas", "zoedepth", "dav2", "sim-depth", "oracle"}
SUITE_NAMES = {"libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90",
               "libero_plus", "simpler_widowx"}


def test_builtin_entries_are_declared_without_heavy_imports():

    load_builtin_entries()
    assert PAPER_POLICIES <= set(POLICIES.names())
    assert SUITE_NAMES <= set(SUITES.names())
    assert all(description for _, description in POLICIES.describe())


def test_unknown_name_lists_known_names_and_suggests():
    load_builtin_entries()
    with pytest.raises(UnknownNameError) as info:
        POLICIES.check("lmap")
    message = str(info.value)
    assert "unknown policy 'lmap'" in message and "Did you mean 'lamp'" in message
    assert "openvla" in message and "steps-10" in message


def test_decorator_registers_and_lazy_entry_imports_module(tmp_path, monkeypatch):
    registry = Registry("widget", "widgets")

    @registry.register("plain", "a plain widget")
    def make_plain(size=1):
        return ("plain", size)

    assert registry.build("plain", size=3) == ("plain", 3)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("plain")(lambda: None)

    module = tmp_path / "lazy_widget_mod.py"
    module.write_text(
        "from test_registry_target import REG\n"
        "@REG.register('lazy')\n"
        "def make():\n    return 'built lazily'\n"
    )
    (tmp_path / "test_registry_target.py").write_text("REG = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import test_registry_target

    test_registry_target.REG = registry
    registry.register_lazy("lazy", "lazy_widget_mod", "imported on first use")
    assert registry.describe()[0] == ("lazy", "imported on first use")
    assert registry.build("lazy") == "built lazily"
