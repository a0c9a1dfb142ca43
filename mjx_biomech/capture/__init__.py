"""What a recording gives: cameras and calibration, 2D keypoint captures, synthetic people and captures."""
