"""pebal_ros: the ROS 2 side (node, camera publisher, image conversions, occupancy grid, QoS, rosbag tools).

A thin shell over :mod:`pebal_core`; everything that imports ROS lives here.
"""
