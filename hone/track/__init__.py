"""What a run leaves behind and shows while it trains: run directories, metrics, progress."""
