"""`python -m producer.cli ...`: the `ttsfleet` command without its installed script (benchmarks, tests)."""

from producer.cli import main

main()
