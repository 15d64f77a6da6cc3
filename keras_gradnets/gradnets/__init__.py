"""GradNets (Almeida & Sauder): gradual layers, the linear schedule and
GradNetScheduler."""
