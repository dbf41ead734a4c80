"""attnwidget: see, measure and teach transformer attention."""

from attnwidget.extract import NoAttentionFoundError, extract_attention
from attnwidget.maps import ROW_SUM_ATOL, AttentionMaps
from attnwidget.widget import AttentionView

__all__ = [
    "ROW_SUM_ATOL",
    "AttentionMaps",
    "AttentionView",
    "NoAttentionFoundError",
    "extract_attention",
]
__version__ = "0.1.0"
