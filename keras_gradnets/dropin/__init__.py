"""DropIn (Smith, Hand & Doster): DropIn, Resize and DropInScheduler."""
