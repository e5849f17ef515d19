"""transformers models of pact_zoo (``configuration_*.py`` + ``modeling_*.py`` per family).

Importing this package registers every model with the Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``).
"""
from transformers import (
    AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification,
)

from .configuration_pact_lstm import PactLSTMConfig
from .modeling_pact_lstm import (
    PactLSTMForSequenceClassification, PactLSTMForTokenClassification, PactLSTMModel, PactLSTMModelOutput,
    PactLSTMPreTrainedModel, PactLSTMSequenceClassifierOutput, PactLSTMTokenClassifierOutput, remote_code_files,
)

AutoConfig.register(PactLSTMConfig.model_type, PactLSTMConfig, exist_ok=True)
AutoModel.register(PactLSTMConfig, PactLSTMModel, exist_ok=True)
AutoModelForSequenceClassification.register(PactLSTMConfig, PactLSTMForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(PactLSTMConfig, PactLSTMForTokenClassification, exist_ok=True)

__all__ = [
    "PactLSTMConfig", "PactLSTMForSequenceClassification", "PactLSTMForTokenClassification", "PactLSTMModel",
    "PactLSTMModelOutput", "PactLSTMPreTrainedModel", "PactLSTMSequenceClassifierOutput",
    "PactLSTMTokenClassifierOutput", "remote_code_files",
]
