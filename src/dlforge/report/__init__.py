"""Self-contained HTML reports and the figures in them."""
