"""Fine-tuning with learned token pruning: data readers (rosbag2, LeRobot), statistics, augmentation, the trainer
(``lightvla train``), the procedural toy task and the CPU pruning study (``lightvla study``)."""
