"""Training stages (teacher, occupancy, distill, finetune) and the pipeline."""
