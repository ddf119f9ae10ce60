"""pebal_ros: the ROS 2 side (rclpy node, image conversions, occupancy grid, rosbag tools).

A thin shell over :mod:`pebal_core`; everything that imports ROS lives here.
"""
