"""autointerp: extract neuron activations, render explanation prompts, explain, simulate and score."""

__version__ = "0.1.0"


def known_errors() -> tuple[type[BaseException], ...]:
    """Error classes that carry a complete user-facing message (printed without a traceback)."""
    from autointerp.common.config import ConfigError
    from autointerp.common.io import InputFileError
    from autointerp.llm.client import LLMError
    from autointerp.llm.config import LLMConfigError
    from autointerp.extract.corpus import CorpusError
    from autointerp.extract.activations import ExtractionError
    from autointerp.extract.neuron_sets import NeuronSetError
    from autointerp.prompts.stage import FormatConfigError
    from autointerp.similarity.puzzles import PuzzleError
    from autointerp.extract.records import RecordError
    from autointerp.extract.subject_models import SubjectModelError

    from autointerp.common.released import ReleasedFileError
    from autointerp.explain.imported import ImportedFileError
    from autointerp.explain.stage import ExplainError
    from autointerp.simulate.stage import SimulateError
    from autointerp.tables.cost import BudgetError

    return (ConfigError, CorpusError, ExtractionError, NeuronSetError, RecordError, SubjectModelError,
            FormatConfigError, PuzzleError, ExplainError, InputFileError, LLMConfigError, LLMError, SimulateError,
            BudgetError, ImportedFileError, ReleasedFileError)
