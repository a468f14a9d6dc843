"""Click models fit on a :class:`uptrain.clicks.log.ClickLog` (Chuklin, Markov, de Rijke,
"Click Models for Web Search", 2015), one file each, all behind :class:`ClickModel`:

``gctr``  global CTR                       ``rctr``  rank CTR
``dctr``  document (query, doc) CTR        ``pbm``   position-based model (EM)
``cm``    cascade model (closed-form MLE)  ``dcm``   dependent click model (closed-form MLE)
``ubm``   user browsing model (EM)         ``dbn``   dynamic Bayesian network (EM)
``sdbn``  simplified DBN (closed-form MLE)  ``ccm``   click chain model (EM)

``make(name, **kwargs)`` builds one by its registry name; the shared settings (iterations,
prior, pseudo_count, tol, eps) and their defaults are described in :mod:`.base`.
"""

from __future__ import annotations

from uptrain.clicks.models.base import ClickModel, PairTable
from uptrain.clicks.models.ccm import CCM
from uptrain.clicks.models.cm import CM
from uptrain.clicks.models.dbn import DBN
from uptrain.clicks.models.dcm import DCM
from uptrain.clicks.models.dctr import DCTR
from uptrain.clicks.models.gctr import GCTR
from uptrain.clicks.models.pbm import PBM
from uptrain.clicks.models.rctr import RCTR
from uptrain.clicks.models.sdbn import SDBN
from uptrain.clicks.models.ubm import UBM
from uptrain.errors import ConfigError

CLICK_MODELS: dict[str, type[ClickModel]] = {
    cls.name: cls for cls in (GCTR, RCTR, DCTR, PBM, CM, DCM, UBM, DBN, SDBN, CCM)
}


def make(name: str, **kwargs) -> ClickModel:
    """A new, unfitted click model by its registry name (case-insensitive) with the shared settings."""
    key = str(name).strip().lower()
    if key not in CLICK_MODELS:
        raise ConfigError(f"unknown click model {name!r}; known click models: {', '.join(CLICK_MODELS)}")
    try:
        return CLICK_MODELS[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"click model {key} does not take the settings {sorted(kwargs)} ({exc}); "
            "the settings are iterations, prior, tol, pseudo_count and eps"
        ) from None


__all__ = ["CLICK_MODELS", "ClickModel", "PairTable", "make", "CCM", "CM", "DBN", "DCM", "DCTR", "GCTR", "PBM", "RCTR", "SDBN", "UBM"]
