"""Mollifying networks (Gulcehre et al.): mollified layers and cells, the p
schedules and MollifierScheduler."""
