"""Dynamic capacity (the thesis, chapters 4-5): dynamic layers, their linking,
CapacityGrowth and activation statistics."""
