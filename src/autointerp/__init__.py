"""autointerp: extract neuron activations, render explanation prompts, explain, simulate and score."""

__version__ = "0.1.0"


def known_errors() -> tuple[type[BaseException], ...]:
    """Error classes that carry a complete user-facing message (printed without a traceback)."""
    from .config import ConfigError
    from .corpus import CorpusError
    from .extraction import ExtractionError
    from .neuron_sets import NeuronSetError
    from .prompt_rendering import FormatConfigError
    from .puzzles import PuzzleError
    from .record_splits import RecordError
    from .subject_models import SubjectModelError

    from .explain import ExplainError

    return (ConfigError, CorpusError, ExtractionError, NeuronSetError, RecordError, SubjectModelError,
            FormatConfigError, PuzzleError, ExplainError)
