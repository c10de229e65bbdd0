import pytest

from netcompress.core import ConfigError, Registry


def test_registry_get_and_did_you_mean():
    reg = Registry("widget")

    @reg.register()
    def magnitude():
        return 1

    assert reg.get("magnitude")() == 1
    assert "magnitude" in reg and reg.names() == ["magnitude"]
    with pytest.raises(ConfigError, match="Did you mean 'magnitude'"):
        reg.get("magnitud")


def test_double_registration_is_refused():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError):
        reg.register("a")(float)
