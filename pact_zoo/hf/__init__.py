"""transformers models of pact_zoo (``configuration_*.py`` + ``modeling_*.py`` per family).

Importing this package registers every model with the Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``).
"""
from transformers import (
    AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification,
)

from .configuration_acm_bert import AcmBertConfig
from .configuration_pact_encoder import SUPPORTED_ENCODERS, PactEncoderConfig
from .configuration_pact_lstm import PactLSTMConfig
from .modeling_acm_bert import AcmBertForSequenceClassification, AcmBertModel
from .modeling_pact_encoder import (
    PactEncoderForSequenceClassification, PactEncoderForTokenClassification, PactEncoderModel,
    PactEncoderModelOutput, PactEncoderPreTrainedModel, PactEncoderSequenceClassifierOutput,
    PactEncoderTokenClassifierOutput,
)
from .modeling_pact_lstm import (
    PactLSTMForSequenceClassification, PactLSTMForTokenClassification, PactLSTMModel, PactLSTMModelOutput,
    PactLSTMPreTrainedModel, PactLSTMSequenceClassifierOutput, PactLSTMTokenClassifierOutput, remote_code_files,
)

AutoConfig.register(AcmBertConfig.model_type, AcmBertConfig, exist_ok=True)
AutoModel.register(AcmBertConfig, AcmBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(AcmBertConfig, AcmBertForSequenceClassification, exist_ok=True)
AutoConfig.register(PactLSTMConfig.model_type, PactLSTMConfig, exist_ok=True)
AutoModel.register(PactLSTMConfig, PactLSTMModel, exist_ok=True)
AutoModelForSequenceClassification.register(PactLSTMConfig, PactLSTMForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(PactLSTMConfig, PactLSTMForTokenClassification, exist_ok=True)
AutoConfig.register(PactEncoderConfig.model_type, PactEncoderConfig, exist_ok=True)
AutoModel.register(PactEncoderConfig, PactEncoderModel, exist_ok=True)
AutoModelForSequenceClassification.register(PactEncoderConfig, PactEncoderForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(PactEncoderConfig, PactEncoderForTokenClassification, exist_ok=True)

__all__ = [
    "AcmBertConfig", "AcmBertForSequenceClassification", "AcmBertModel",
    "PactLSTMConfig", "PactLSTMForSequenceClassification", "PactLSTMForTokenClassification", "PactLSTMModel",
    "PactLSTMModelOutput", "PactLSTMPreTrainedModel", "PactLSTMSequenceClassifierOutput",
    "PactLSTMTokenClassifierOutput", "remote_code_files",
    "PactEncoderConfig", "PactEncoderForSequenceClassification", "PactEncoderForTokenClassification",
    "PactEncoderModel", "PactEncoderModelOutput", "PactEncoderPreTrainedModel", "PactEncoderSequenceClassifierOutput",
    "PactEncoderTokenClassifierOutput", "SUPPORTED_ENCODERS",
]
