"""The explanation simulator (Bills et al. 2023, all-at-once; explainer_anchors §4.1) with two transports.

Public API::

    build_simulator_prompt(explanation, tokens, *, few_shot="original") -> SimulatorPrompt
        .text (IF string, byte-identical to the reference), .messages (chat form, documentation only),
        .tokens, .unknown_offsets (character offset of each target "unknown" in .text)
    build_chat_simulation_messages(explanation, tokens, *, few_shot="original") -> list[dict]
    expected_value(top_logprobs, *, prefix="") -> (ev, {digit: prob})
    align_prompt_logprobs(prompt, tokens, text_offsets, top_logprobs) -> dict   # echo response -> per token
    parse_chat_simulation(subject_tokens, text, logprobs) -> dict               # chat reply -> per token
    await simulate_sequence(client, explanation, tokens, *, mode="prompt_logprobs"|"chat_logprobs", ...)
    await simulate_sequences(client, explanation, sequences, *, mode=..., concurrency=64) -> [SequenceSimulation]
    SequenceSimulation(tokens, expected_values, distributions, flags, mode, n_merged, n_extra_lines, meta)
        .n_ok/.n_no_digit/.n_unaligned/.counts, .to_dict(), SequenceSimulation.from_dict(d)

Transport A, ``prompt_logprobs`` (the reference method): one ``/v1/completions`` call with ``echo=True,
max_tokens=0, logprobs=15`` on the IF prompt, whose target lines are all ``token<TAB>unknown``. The prediction for
subject token j is the top-15 distribution at the simulator token starting exactly at the offset of its
``unknown``, i.e. what the model expects after the TAB. Alignment rules (merged ``"\\tunknown"`` tokens, flags)
are in ``autointerp.simulate.parsing``.

Transport B, ``chat_logprobs`` (chat models without echo, e.g. gpt-4o-mini): temperature 0, top_p 1,
``max_tokens = 8·n + 50``, ``logprobs=True, top_logprobs=15`` (<= 20 on OpenAI). Messages:

* system (``CHAT_SYSTEM_MESSAGE``): the reference simulator's first paragraph, then "The activation format is
  token<tab>activation, activations go from 0 to 10. Most activations will be 0. You will be given the
  explanation of a neuron and a text split into tokens, one token per line. Reply with exactly one line per token,
  in the same order: the token exactly as given, a tab, and the predicted activation as an integer from 0 to 10.
  Inside tokens, a newline is written \\n, a tab \\t, a carriage return \\r and a backslash \\\\. Write nothing
  else."
* per ORIGINAL few-shot record (3 examples × 2 records), a user turn ``"Neuron {i}\\nExplanation of neuron {i}
  behavior: the main thing this neuron does is find {explanation}\\nTokens:\\n"`` + one escaped token per line,
  and an assistant turn of ``escaped_token<TAB>value`` lines with every value revealed (0..10, normalised per
  example as in the reference);
* the target's user turn in the same shape, numbered ``len(examples) + 1``.

The value of each reply line is read from the logprobs of the generated token right after the line's last TAB.
"""

from autointerp.simulate.parsing import (
    DIGITS,
    FLAGS,
    NO_DIGIT,
    OK,
    UNALIGNED,
    align_prompt_logprobs,
    expected_value,
    generated_offsets,
    parse_chat_simulation,
)
from autointerp.simulate.prompts import (
    CHAT_SYSTEM_MESSAGE,
    SIMULATOR_SYSTEM_MESSAGE,
    UNKNOWN,
    SimulatorPrompt,
    build_chat_simulation_messages,
    build_simulator_prompt,
    escape_token,
)
from autointerp.simulate.results import SequenceSimulation
from autointerp.simulate.runner import MODES, chat_max_tokens, simulate_sequence, simulate_sequences

__all__ = [
    "CHAT_SYSTEM_MESSAGE", "DIGITS", "FLAGS", "MODES", "NO_DIGIT", "OK", "SIMULATOR_SYSTEM_MESSAGE", "UNALIGNED",
    "UNKNOWN", "SequenceSimulation", "SimulatorPrompt", "align_prompt_logprobs", "build_chat_simulation_messages",
    "build_simulator_prompt", "chat_max_tokens", "escape_token", "expected_value", "generated_offsets",
    "parse_chat_simulation", "simulate_sequence", "simulate_sequences",
]
