"""Research code that is not part of the installed ``lightvla_ros`` package: run from a checkout."""
