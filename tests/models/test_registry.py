import pytest

from segedge.core.errors import InputSizeError, UnknownModelError
from segedge.models.registry import create_model, get_spec, list_models


def test_zoo_has_the_first_two_architectures():
    assert {"bisenet", "unet"} <= set(list_models())


def test_unknown_model_lists_valid_names_and_suggests():
    with pytest.raises(UnknownModelError) as err:
        get_spec("bisnet")
    message = str(err.value)
    assert "unknown model 'bisnet'" in message
    assert "Did you mean 'bisenet'" in message
    assert "unet" in message


def test_alias_and_case_resolve():
    assert get_spec("BiSeNet").name == "bisenet"


def test_size_check_names_nearest_valid_sizes():
    spec = get_spec("bisenet")
    with pytest.raises(InputSizeError) as err:
        spec.check_input_size(500, 1024)
    assert "height 500 is not a multiple of 32 (nearest valid: 480 or 512)" in str(err.value)
    spec.check_input_size(512, 1024)


def test_size_below_minimum_is_refused():
    with pytest.raises(InputSizeError, match="below the minimum"):
        get_spec("unet").check_input_size(8, 64)


def test_create_model_honours_class_count():
    import torch

    model = create_model("unet", num_classes=5, width=0.125)
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 5, 64, 64)
