"""Configs as code: LazyCall nodes, LazyConfig files, and instantiate."""

from pgtrain.config.lazy import LazyConfig
from pgtrain.config.lazy_call import (
    LazyCall,
    accepts_keyword,
    check_arguments,
    check_calls,
    instantiate,
    locate,
    signature_keywords,
    target_name,
)
from pgtrain.config.plain import to_plain

__all__ = [
    "LazyCall",
    "LazyConfig",
    "accepts_keyword",
    "check_arguments",
    "check_calls",
    "instantiate",
    "locate",
    "signature_keywords",
    "target_name",
    "to_plain",
]
