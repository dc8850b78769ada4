"""Fine-tuning with learned token pruning: data readers (rosbag2, LeRobot), statistics, augmentation and the trainer
(``lightvla train``). The CPU pruning study built on it lives outside the package, in ``experiments/pruning_study``."""
