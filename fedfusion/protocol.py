"""The names that cross the wire between the coordinator and the sites, each defined once.

Record names, config keys, metric keys, message actions and error codes that one side writes and the other reads.
Both sides import them from here, so neither imports the other: the coordinator (``fedfusion.coordinator``) and
the site (``fedfusion.site``) meet only in this module and in ``fedfusion.secure_aggregation``. This module
imports nothing from fedfusion. Several names are Flower's own conventions (``FedAvg`` writes ``arrays``,
``config`` and ``server-round`` and weights by ``num-examples``); they are written down here so that a reader
finds every name a message can hold in one place.

A train or evaluate instruction holds ``arrays`` (the global model) and ``config`` (``server-round``; a secure
round adds the ``secagg`` record). A reply holds ``arrays`` (train, plain aggregation only), ``metrics`` and
``site``; or an error with one of the codes below and a short fixed reason (never exception text or a path).
A train instruction of round r > 1 also names ``evaluate-round`` (r - 1): its arrays are round r - 1's global model,
and the site evaluates them first; its reply then also holds ``evaluation`` (the evaluate reply's metrics) or
``evaluation-error`` (the code and reason the evaluate error reply would carry).
"""

from __future__ import annotations

# Records of a message's content (a Flower RecordDict).

ARRAYS_RECORD = "arrays"
"""ArrayRecord: the global model in an instruction, the trained weights in a plain train reply."""
METRICS_RECORD = "metrics"
"""MetricRecord of a reply: the site's aggregate numbers (see the metric keys below)."""
CONFIG_RECORD = "config"
"""ConfigRecord of an instruction: the round's settings (``server-round``)."""
SITE_RECORD_KEY = "site"
"""ConfigRecord of a reply holding the site's public name under ``SITE_NAME_KEY``."""
SITE_NAME_KEY = "name"
"""The site's public name in the ``site`` record (the only site fact that leaves the site)."""
EVALUATION_RECORD = "evaluation"
"""MetricRecord of a train reply that was asked ``evaluate-round``: the metrics an evaluate reply of that round
would hold (aggregate numbers only)."""
EVALUATION_ERROR_RECORD = "evaluation-error"
"""ConfigRecord of a train reply whose ``evaluate-round`` evaluation failed or was refused: ``code`` and ``reason``,
those of the error an evaluate message would have been answered with (training is answered all the same)."""
ERROR_CODE_KEY = "code"
"""The error code (an integer, below) in the ``evaluation-error`` record."""
ERROR_REASON_KEY = "reason"
"""The fixed public reason in the ``evaluation-error`` record."""

# Config keys.

SERVER_ROUND_KEY = "server-round"
"""The round number in an instruction's ``config`` record (written by Flower's FedAvg and the SecAgg stages)."""
EVALUATE_ROUND_KEY = "evaluate-round"
"""In a train instruction's ``config`` record: the round whose global model its arrays are (the previous round).
The site evaluates them first, as that round's evaluation, and sends the metrics in its train reply: a study's rounds
need no evaluate message but the last one's (``coordinator/folded_evaluation.py``)."""

# Metric keys of replies and rounds.

WEIGHT_KEY = "num-examples"
"""Reply metric holding the site's patient count: the FedAvg weight (patients are the privacy unit, not tiles)."""
EPSILON_KEY = "epsilon"
"""Train metric: the site's cumulative epsilon; the federation reports the maximum over sites, not a mean."""
DELTA_KEY = "delta"
"""Train metric: the delta the epsilon is accounted at."""
NOISE_MULTIPLIER_KEY = "noise-multiplier"
"""Train metric: the DP-SGD noise multiplier used (0 with DP off)."""
MAX_GRAD_NORM_KEY = "max-grad-norm"
"""Train metric: the DP-SGD clipping norm used (0 with DP off)."""
DP_METRIC_KEYS = (EPSILON_KEY, DELTA_KEY, NOISE_MULTIPLIER_KEY, MAX_GRAD_NORM_KEY)
"""The train metrics that describe a reply's differential privacy (kept in the site's egress record)."""
CONCORDANT_PAIRS_KEY = "concordant-pairs"
"""Evaluate metric: concordant patient pairs among the site's comparable test pairs."""
COMPARABLE_PAIRS_KEY = "comparable-pairs"
"""Evaluate metric: comparable patient pairs within the site's test patients."""
POOLED_C_INDEX_KEY = "pooled-c-index"
"""Round metric: concordant over comparable pairs summed over sites (no per-patient prediction leaves a site)."""
SECURE_AGGREGATION_SITES_KEY = "secure-aggregation-sites"
"""Round metric of a secure train round: the sites whose update went into the average."""
SECURE_AGGREGATION_REJECTED_KEY = "secure-aggregation-rejected"
"""Round metric of a secure train round: the sites dropped for a failed integrity check (logged with the site's
name and the reason; ``fedfusion.secure_aggregation.server``)."""
NOT_AGGREGATED_KEY = "not-aggregated"
"""Round metric (1) of a train round whose updates were not aggregated: the global model stayed as it was."""
PERSONALIZED_PREFIX = "personalized-"
"""Prefix of the evaluate metrics of a site's personalized model (``personalization-epochs``), sent beside the global
model's in the last round's evaluate reply (e.g. ``personalized-c-index``)."""
PERSONALIZATION_REFUSED_KEY = "personalization-refused"
"""Evaluate metric (1) of a last round whose personalization the site refused (budget, unreadable ledger)."""
REJECTED_REPLIES_KEY = "rejected-replies"
"""Round metric: the sites' replies the coordinator rejected as invalid (``coordinator/reply_validation.py``); present
when there were any. A rejected site's own row holds ``rejected`` = 1 instead of its numbers."""
REJECTED_KEY = "rejected"
"""Site row (1) of a reply the coordinator rejected as invalid: left out of the round like a dropout."""

# Secure aggregation (SecAgg+): the record layouts are in ``fedfusion.secure_aggregation.wire_records``.

SECAGG_RECORD = "secagg"
"""ConfigRecord of every SecAgg message and reply; its ``stage`` value names the step."""
MASKED_RECORD = "masked"
"""ArrayRecord of a masked-input reply: the masked vector."""
QUERY_ACTION = "secagg"
"""Stages 2-4 travel as Flower ``query`` messages of this action."""
SECAGG_MESSAGE_TYPE = f"query.{QUERY_ACTION}"
"""The message type of a stage 2-4 message."""
STAGE_TRAIN = "train"
"""Stage of a train instruction of a secure round: the site's id and the round's SecAgg numbers."""
STAGE_KEYS = "keys"
"""Stage of a secure round's train reply: the site's public keys (stage 1), no weights."""
STAGE_SHARE_KEYS = "share-keys"
"""Stage 2: the announced keys out, the encrypted secret shares back."""
STAGE_MASKED_INPUT = "masked-input"
"""Stage 3: the shares addressed to a site out, its masked update back."""
STAGE_UNMASK = "unmask"
"""Stage 4: survivors and dropouts out, the shares that remove the masks back."""

# Error replies (Flower ``Error`` codes) a site sends instead of content.

SITE_ERROR_CODE = 3001
"""The site failed to answer; the reason names the site and the error class only (details in the site's log)."""
SITE_REFUSAL_CODE = 3002
"""The site refuses under one of its rules; the reason is fixed text naming the site and the rule."""
EGRESS_ERROR_CODE = 3003
"""The site could not record its reply in its egress record, so the reply was withheld."""
UNREADABLE_REPLY_CODE = 3004
"""Given by the coordinator's grid to a reply whose packed content it cannot read (``fedfusion.array_packing``): the
reply counts as its site's failure, named, instead of ending the ServerApp."""

# A deployed message's whole content packed into one record (fedfusion.array_packing).

PACKED_RECORD = "fedfusion.packed"
"""The one record of a packed content: a ConfigRecord, or an ArrayRecord when the content is larger than one
array chunk of Flower's."""
PACKED_CONTENT_KEY = "content"
"""The packed record's one value: the serialized RecordDict (bytes, or a uint8 Array of them)."""

# The ServerApp's notice to the coordinator's Fleet gateway that it pushed messages (fedfusion.coordinator.push_notice).

PUSH_NOTICE_SOCKET_ENV = "FEDFUSION_PUSH_NOTICE_SOCKET"
"""Environment variable the coordinator daemon gives the SuperLink (and so its SuperExec and ServerApps): the path of
the gateway's Unix datagram socket. Unset (a simulation, a test): no notices are sent."""

# The gateway's notice to the ServerApps that a site handed in a reply (fedfusion.coordinator.reply_notice).

REPLY_NOTICE_DIR_ENV = "FEDFUSION_REPLY_NOTICE_DIR"
"""Environment variable the coordinator daemon gives the SuperLink (and so its SuperExec and ServerApps): the folder
where each ServerApp binds its reply-notice socket. Unset (a simulation, a test): replies are pulled every 0.1 s."""
