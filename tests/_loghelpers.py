"""What test_log.py and test_log_differential.py share about the event log."""

# The counters Log.stats() reports on both cores (file-backed logs add more).
COUNTERS = (
    "appended",
    "evicted",
    "evicted_max_events",
    "evicted_max_bytes",
    "evicted_max_age",
    "evicted_max_per_subject",
    "rejected",
    "duplicates",
    "purged",
)
