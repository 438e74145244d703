"""The sizing engine: the published architectures as data, and one workload's peak GPU
memory and FLOPs measured at real shapes with no weights (editpersist.sizing)."""

from __future__ import annotations

import pytest

from editpersist.sizing import architectures as arch

# The counts the published configurations build to, digit for digit (SDXL's UNet and
# FLUX.1-schnell's transformer are published rounded: 2.6B and 12B).
EXACT = {("sdxl", "unet"): 2_567_463_684, ("flux-schnell", "transformer"): 11_891_178_560,
         ("flux-schnell", "vae"): 83_819_683}


@pytest.mark.parametrize("arch_name,component", [(a, c) for a, cs in arch.ARCHITECTURES.items() for c in cs])
def test_every_component_builds_to_its_published_parameter_count(arch_name, component):
    count = arch.parameter_count(arch_name, component)
    published = arch.PUBLISHED_PARAMETERS.get((arch_name, component))
    assert published is not None or (arch_name, component) in arch.UNPUBLISHED
    if published is not None:
        assert published.agrees(count), (arch_name, component, count, published.figure)
    if (arch_name, component) in EXACT:
        assert count == EXACT[(arch_name, component)]


def test_published_figures_are_read_at_their_printed_precision():
    assert arch.Published("2.6B", "").agrees(2_567_463_684)
    assert not arch.Published("2.6B", "").agrees(2_660_000_000)
    assert arch.Published("694.66M", "").agrees(694_659_840)
    assert not arch.Published("694.66M", "").agrees(694_650_000)
    assert arch.Published("859,520,964", "").agrees(859_520_964)
    assert not arch.Published("859,520,964", "").agrees(859_520_965)


def test_components_build_in_the_asked_dtype_with_no_memory():
    import torch

    unet = arch.build("sd14", "unet", "bf16")
    params = list(unet.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16} and all(p.is_meta for p in params)
    assert arch.parameter_bytes("sd14", "unet", "fp16") == 2 * 859_520_964


def test_unknown_architecture_or_component_is_one_line_naming_it():
    from editpersist.errors import ConfigError

    with pytest.raises(ConfigError, match="'sd15'"):
        arch.components("sd15")
    with pytest.raises(ConfigError, match="'transformer'"):
        arch.build("sd14", "transformer")
    with pytest.raises(ConfigError, match="'int8'"):
        arch.torch_dtype("int8")


def test_shipped_scheduler_configs_are_the_families_published_schedulers():
    """The shipped scheduler files agree with what the families build as their published
    schedulers (two independent transcriptions of the same files)."""
    from editpersist.families import get_family

    for name, family in arch.ARCH_FAMILY.items():
        shipped = arch.load_config(name, "scheduler")
        built = dict(get_family(family).published_scheduler().config)
        for key, value in shipped.items():
            if not key.startswith("_") and key in built:
                assert built[key] == (tuple(value) if isinstance(value, list) else value), (name, key)
