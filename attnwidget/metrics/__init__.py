"""Pure functions over attention ``[..., Q, K]``: one matrix, one head, one layer or a whole stack.

numpy arrays, torch tensors and :class:`attnwidget.AttentionMaps` are all
accepted; results have the input's leading shape (floats for a single 2-D
matrix). No widget code lives here.
"""

from attnwidget.metrics.basic import (
    STATISTICS_KEYS,
    analyze_attention_patterns,
    compute_attention_entropy,
    compute_attention_sparsity,
    compute_attention_statistics,
    create_attention_heatmap,
    find_top_k_attended,
    gini_coefficient,
    normalized_entropy,
    top_k_keys,
)
from attnwidget.metrics.compare import head_similarity, js_distance_matrix, kl_divergence_matrix
from attnwidget.metrics.flow import attention_flow, attention_rollout
from attnwidget.metrics.history import (
    HINT_RULES,
    attention_received,
    compression_hints,
    history_metrics,
    last_query_profile,
    max_position,
    recency_ratio,
)
from attnwidget.metrics.patterns import (
    GRADES,
    PATTERN_RULES,
    PATTERNS,
    SPREAD_UNIFORM_RULE,
    duplicate_token_score,
    explain_pattern,
    head_sharpness,
    identify_attention_pattern,
    induction_score,
    pattern_scores,
    previous_token_score,
    sharpness_grade,
)
from attnwidget.metrics.summary import (
    PanelMetrics,
    analyze_stack,
    head_badges,
    head_summary,
    panel_metrics,
)

__all__ = [
    "GRADES",
    "HINT_RULES",
    "PATTERNS",
    "PATTERN_RULES",
    "SPREAD_UNIFORM_RULE",
    "STATISTICS_KEYS",
    "PanelMetrics",
    "analyze_attention_patterns",
    "analyze_stack",
    "attention_flow",
    "attention_received",
    "attention_rollout",
    "compression_hints",
    "compute_attention_entropy",
    "compute_attention_sparsity",
    "compute_attention_statistics",
    "create_attention_heatmap",
    "duplicate_token_score",
    "explain_pattern",
    "find_top_k_attended",
    "gini_coefficient",
    "head_badges",
    "head_sharpness",
    "head_similarity",
    "head_summary",
    "history_metrics",
    "identify_attention_pattern",
    "induction_score",
    "js_distance_matrix",
    "kl_divergence_matrix",
    "last_query_profile",
    "max_position",
    "normalized_entropy",
    "panel_metrics",
    "pattern_scores",
    "previous_token_score",
    "recency_ratio",
    "sharpness_grade",
    "top_k_keys",
]
