"""Tests of the teacherkit-augment plugin."""
