"""Example third-party teacherkit plugin (keypoints)."""
