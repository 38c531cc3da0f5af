"""What every Sluice component shares: the error hierarchy, the one command runner,
atomic state files, structured logging."""
