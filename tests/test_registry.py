import pytest

from pgtrain.errors import RegistryError
from pgtrain.registry import Registry


def make():
    reg = Registry("BACKBONES", hint="import mypkg.models to register them")

    @reg.register()
    def resnet50():
        return "r50"

    reg.register("resnet18", lambda: "r18")
    return reg, resnet50


def test_decorator_and_call_registration():
    reg, fn = make()
    assert reg.get("resnet50") is fn
    assert reg.get("resnet18")() == "r18"
    assert reg.names() == ["resnet18", "resnet50"]
    assert "resnet50" in reg and "vgg" not in reg
    assert len(reg) == 2
    assert [name for name, _ in reg] == ["resnet18", "resnet50"]


def test_reregistering_same_object_is_harmless():
    reg, fn = make()
    reg.register("resnet50", fn)
    reg.register()(fn)
    assert reg.get("resnet50") is fn


def test_other_object_under_taken_name_raises():
    reg, _ = make()
    with pytest.raises(RegistryError, match="'resnet50' is taken by .*resnet50; register .* under"):
        reg.register("resnet50", lambda: None)


def test_get_suggests_close_names_and_lists_known():
    reg, _ = make()
    with pytest.raises(RegistryError) as e:
        reg.get("resnet5")
    msg = str(e.value)
    assert "No 'resnet5' in BACKBONES; did you mean 'resnet50' or 'resnet18'?" in msg
    assert "Known: resnet18, resnet50" in msg
    assert "import mypkg.models" in msg


def test_get_without_close_names_still_lists_known():
    reg, _ = make()
    with pytest.raises(RegistryError, match=r"No 'vgg' in BACKBONES\. Known: resnet18, resnet50"):
        reg.get("vgg")
