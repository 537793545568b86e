"""The CPU a speed figure was measured on, named by /proc/cpuinfo's vendor, family, model and the
instruction sets that choose the kernels; and that experiment summaries and benchmarks carry it."""

from jaxdl import runtime
from jaxdl.train.metrics import device_description

ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512_bf16 avx512vl

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512_bf16 avx512vl
"""

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_family_model_and_instruction_sets_are_named():
    assert runtime.cpu_description(ZEN5) == "AMD EPYC, AMD family 26 model 2, AVX2/AVX-512/AVX512-BF16"
    assert runtime.cpu_description(SAPPHIRE_RAPIDS) == (
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, Intel family 6 model 143, AVX2/AVX-512/AVX512-BF16/AMX")
    older = ZEN5.replace(" avx512f avx512dq avx512_bf16 avx512vl", "")
    assert runtime.cpu_description(older) == "AMD EPYC, AMD family 26 model 2, AVX2"


def test_without_cpuinfo_the_platform_names_the_processor(monkeypatch):
    monkeypatch.setattr(runtime.platform, "processor", lambda: "arm")
    assert runtime.cpu_description("") == "arm"
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    assert runtime.cpu_description("") == "aarch64"


def test_the_run_summary_device_names_this_cpu():
    description = device_description()
    assert description.startswith("cpu (") and runtime.cpu_description() in description and "1 device" in description
