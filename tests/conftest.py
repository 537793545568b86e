"""Shared test setup: the repo root on sys.path (for experiments/ and benchmarks/), and a persistent XLA
compilation cache for this session, so a program compiled once (the same model built again by another
test or experiment run) is not compiled again: XLA:CPU compiles are the bulk of the suite's time.

Run in parallel (`-n 2 --dist loadgroup`, pytest-xdist), the workers share that cache, and each test
file runs whole in one worker (its module fixtures are made once); tests/inference's files, which
share the session's tiny trained runs, run together in one."""

import atexit
import os
import shutil
import sys
import tempfile

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from jaxdl import runtime  # noqa: E402
from tests import run_store  # noqa: E402

runtime.configure_allocator()  # as the experiments do: no page faults re-taking each step's temporaries
# the scripts the tests start run on 4 KB pages: they are short, and starting again with huge pages costs
# each about half a second (jaxdl/allocator.py; tests/runtime/test_allocator.py checks the relaunch itself)
if "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"

# XLA:CPU compiles the suite's small programs faster without LLVM's optimisation and with its older
# fusion emitters (most of the suite's time is compiling); the few tests whose programs run long compile
# them with `tests.conftest.OPTIMISED` (per-program options win over XLA_FLAGS). Programs on several
# devices get `multi_device_xla_flags`, without the older emitters: with both flags, XLA:CPU (jaxlib
# 0.10.2) computes the second and later calls of the 8-device batch-norm train step wrongly (its loss
# at step 2 is 0.970, not 0.950; the first call is right), every time.
NOT_ON_SEVERAL_DEVICES = "--xla_cpu_use_fusion_emitters=false"
TEST_XLA_FLAGS = ["--xla_backend_optimization_level=0", NOT_ON_SEVERAL_DEVICES]
OPTIMISED = {"xla_backend_optimization_level": 2, "xla_cpu_use_fusion_emitters": True}

_CACHE = os.environ.get("JAXDL_TEST_XLA_CACHE")
if _CACHE is None:  # the first process (xdist's controller, or the only one): workers inherit both
    _CACHE = os.environ["JAXDL_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxdl-test-xla-cache-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    _RUNS = os.environ[run_store.STORE] = tempfile.mkdtemp(prefix="jaxdl-test-runs-")  # tests/run_store.py
    atexit.register(shutil.rmtree, _RUNS, ignore_errors=True)
    if os.environ.get("JAXDL_TEST_XLA_DEFAULTS", "1") != "0":  # =0: the suite on XLA's own settings
        runtime.add_xla_flags(runtime.supported_cpu_flags(TEST_XLA_FLAGS))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def multi_device_xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process of `devices` CPU devices: this one's, less NOT_ON_SEVERAL_DEVICES."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != NOT_ON_SEVERAL_DEVICES]
    return " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])


# `pytest -m "not slow"`: the quick subset for everyday work. SLOW holds files that run whole
# experiments or benchmarks (in-process or as subprocesses), train the session's tiny runs or start
# extra processes, and single tests that take over ~3 s on 2 cores (mostly compiling); prefixes of
# test ids. The full suite runs everything.
SLOW = ("tests/experiments/", "tests/inference/", "tests/benchmarks/", "tests/train/test_multidevice.py",
        "tests/train/test_launch_detection.py", "tests/docs/test_docs_use.py", "tests/docs/test_docs_families.py",
        "tests/docs/test_docs_tools.py",
        "tests/convert/test_gpt2_convert.py", "tests/convert/test_mynet_convert.py",
        "tests/tasks/test_text_to_image.py", "tests/test_grouping.py", "tests/test_run_store.py",
    "tests/models/test_cnn.py::test_dropout_only_in_training",
    "tests/models/test_cnn.py::test_output_shapes",
    "tests/models/test_cnn_torch_parity.py::test_adam_steps_match_torch",
    "tests/models/test_recurrent.py::test_language_model_usable_from_flax_nnx_through_the_bridge",
    "tests/models/test_recurrent.py::test_sequence_classifier_learns_a_counting_task",
    "tests/models/test_recurrent.py::test_unroll_gives_the_same_outputs",
    "tests/models/test_transformer.py::test_remat_and_unroll_give_the_same_loss_and_gradients",
    "tests/models/test_cnn.py::test_usable_from_flax_nnx_through_the_bridge",
    "tests/data/test_tokenizers.py::test_bits_per_character_are_total_nats_over_characters",
    "tests/tasks/test_long_range.py::test_gradient_norms_are_ordered_k_steps_back",
    "tests/tasks/test_long_range.py::test_init_sets_the_embedding_scale_and_only_the_lstm_forget_bias",
    "tests/train/test_model_state.py::test_a_vmapped_step_keeps_each_models_own_statistics",
    "tests/models/test_unet.py::test_untrained_unet_predicts_zero_noise",
    "tests/models/test_unet.py::test_output_depends_on_the_prompt_and_time_but_not_on_padding",
    "tests/models/test_transformer_torch_parity.py::test_same_loss_after_an_adam_step",
    "tests/models/test_cnn.py::test_pooling_max_and_avg",
    "tests/convert/test_recurrent_convert.py::test_torch_module_both_ways[2-True",
    "tests/runtime/test_xla_flags.py::test_a_known_flag_is_accepted_and_an_unknown_one_is_not",
    "tests/tasks/test_diffusion.py::test_ddim_with_the_true_noise_recovers_x0_exactly",
    "tests/tasks/test_long_range.py::test_an_lstm_learns_a_short_lag",
    "tests/tasks/test_long_range.py::test_hidden_gradient_equals_finite_differences_and_the_restarted_recurrence",
    "tests/tasks/test_long_range.py::test_the_step_by_step_model_is_the_scanned_model",
    "tests/tasks/test_generation.py::test_cached_greedy_generation_equals_recomputing_the_whole_sequence",
    "tests/tasks/test_generation.py::test_generation_past_the_context_slides_a_window",
    "tests/tasks/test_generation.py::test_generation_stops_at_the_stop_token",
    "tests/tasks/test_generation.py::test_top_p_keeps_the_smallest_set_reaching_p",
    "tests/tasks/test_language_model.py::test_greedy_decoding_reproduces_a_learned_repeated_string",
    "tests/tasks/test_language_model.py::test_prompts_of_different_lengths_generate_as_if_alone",
    "tests/tasks/test_language_model.py::test_sampling_greedy_top_k_and_temperature",
    "tests/tasks/test_language_model.py::test_validation_loss_is_the_mean_over_every_token_with_windows_from_zero_state",
    "tests/tasks/test_lm_torch_parity.py::test_same_losses_over_adam_steps_with_clipping",
    "tests/tasks/test_seq2seq.py::test_cached_greedy_decoding_equals_recomputing_the_target_prefix",
    "tests/tasks/test_seq2seq.py::test_exact_match_needs_every_target_token_and_the_eos",
    "tests/tasks/test_seq2seq.py::test_loss_is_the_mean_cross_entropy_over_the_target_and_eos",
    "tests/train/test_checkpoint_format.py::test_resuming_the_stored_run_trains_one_more_epoch",
    "tests/train/test_flops.py::test_decoder_lm_matches_training_flops_per_token",
    "tests/train/test_flops.py::test_recurrent_lm_scanned_over_time",
    "tests/tasks/test_long_range.py::test_evaluating_stacked_models_gives_each_its_own_loss_and_accuracy",
    "tests/models/test_norm_torch_parity.py::test_an_mlp_with_batch_norm_trains_like_torch",
    "tests/train/test_bad_numbers.py::test_k_bad_steps_in_a_row_stop_the_run_and_leave_the_checkpoint_intact",
    "tests/train/test_bad_numbers.py::test_a_poisoned_batch_is_skipped_counted_and_training_goes_on",
    "tests/models/test_recurrent_torch_parity.py::test_lengths_match_packed_sequence[gru-True]",
    "tests/models/test_recurrent_torch_parity.py::test_same_weights_same_outputs_states_and_grads[gru-True]",
    "tests/models/test_recurrent_torch_parity.py::test_same_weights_same_outputs_states_and_grads[lstm-True]",
    "tests/tasks/test_language_model.py::test_loss_is_next_token_cross_entropy",
    "tests/models/test_transformer.py::test_seq2seq_cached_decoding_matches_teacher_forcing",
    "tests/train/test_flops.py::test_remat_recomputation_is_counted",
    "tests/train/test_many_models.py::test_vmapped_step_equals_separate_steps_with_per_model_learning_rates",
    "tests/train/test_orbax_noise.py::test_other_unraisable_errors_still_reach_the_previous_hook",
    "tests/train/test_per_example.py::test_per_example_grads_and_norms_match_a_loop_of_grads_on_batches_of_one")
QUICK_IN_SLOW_FILES = ("tests/experiments/test_bad_inputs.py::test_sweep_parse",
                       "tests/experiments/test_bad_inputs.py::test_sweep_extra_parse",
                       "tests/experiments/test_bad_inputs.py::test_sweep_count")  # argument parsing only


UNGROUPED = ("tests/docs/test_docs_use.py", "tests/docs/test_docs_families.py", "tests/docs/test_docs_tools.py")

# The longest xdist groups and page runs first (seconds on 2 cores, 2026-12-03): `--dist loadgroup` hands
# out the groups in collection order, so a long one collected last would run alone at the end. The
# rest follow in collection order. (Using trained models comes after tests/inference, whose runs it copies.)
LONGEST_FIRST = (
    "tests/inference/",  # 160 s
    "tests/docs/test_docs_tools.py::test_page[docs/speed.md]",  # 78
    "tests/experiments/test_resilience.py",  # 80
    "tests/docs/test_docs_families.py::test_page[docs/diffusion.md]",  # 67
    "tests/experiments/test_faults.py",  # 63
    "tests/benchmarks/",  # 56
    "tests/experiments/test_cnn_experiment.py",  # 52
    "tests/docs/test_docs_families.py::test_page[docs/transformers.md]",  # 50
    "tests/docs/test_docs_use.py::test_pytorch",  # 44
    "tests/docs/test_docs_use.py::test_using_trained_models",  # 39
    "tests/docs/test_docs_tools.py::test_page[docs/scale-and-resilience.md]",  # 35
    "tests/docs/test_docs_families.py::test_page[docs/mynet.md]",  # 34
    "tests/tasks/test_text_to_image.py",  # 36
    "tests/docs/test_docs_families.py::test_page[docs/recurrent.md]",  # 30
    "tests/experiments/test_multiprocess.py",  # 31
    "tests/experiments/test_tensorboard.py",  # 29
    "tests/train/test_multidevice.py",  # 27
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (tests/test_grouping.py)
def pytest_collection_modifyitems(config, items):
    """Mark SLOW slow; one xdist group per test file (tests/inference: one for all of it, as its
    files share the session's trained runs), for `--dist loadgroup`, except the page runs of
    UNGROUPED, which share nothing and so spread over the workers one by one; LONGEST_FIRST first
    (a stable sort: each file's tests keep their order)."""
    for item in items:
        path = item.nodeid.split("::")[0]
        if item.nodeid.startswith(SLOW) and not item.nodeid.startswith(QUICK_IN_SLOW_FILES):
            item.add_marker(pytest.mark.slow)
        if path not in UNGROUPED:
            item.add_marker(pytest.mark.xdist_group("tests/inference" if path.startswith("tests/inference/") else path))
    rank = {prefix: i for i, prefix in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: next((rank[p] for p in LONGEST_FIRST if item.nodeid.startswith(p)), len(rank)))
