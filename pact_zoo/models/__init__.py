"""timm model families with adaptive computation. Importing this package registers them with timm."""
from typing import Iterable, List, Union

import timm

from .acm_vit import AcmVisionTransformer
from .pact_resnet import AdaptiveResNet, AdaptiveResNetStage
from .pact_resnet_cifar import CifarResNet, PreActBasicUnit
from .pact_mobilenet import AdaptiveEfficientNet
from .pact_vit import AdaptiveVisionTransformer, TokenHaltingHead
from .adaptive import SequentialAdaptiveStage, make_adaptive, register_adaptive_family, supported_families

#: One timm module name per family file (registry key = the file's last dotted name).
FAMILY_MODULES = ("pact_resnet_cifar", "pact_resnet", "pact_mobilenet", "pact_vit", "acm_vit")

__all__ = [
    "AcmVisionTransformer",
    "AdaptiveResNet", "AdaptiveResNetStage", "CifarResNet", "FAMILY_MODULES", "PreActBasicUnit", "list_models",
    "AdaptiveEfficientNet", "AdaptiveVisionTransformer", "SequentialAdaptiveStage", "TokenHaltingHead",
    "make_adaptive", "register_adaptive_family", "supported_families",
]


def list_models(filter: Union[str, Iterable[str]] = "", pretrained: bool = False) -> List[str]:
    """Names of the timm models registered by pact_zoo (``timm.list_models`` restricted to its families)."""
    return timm.list_models(filter, module=list(FAMILY_MODULES), pretrained=pretrained)
