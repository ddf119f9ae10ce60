"""Alarms a driver can trust: from a per-pixel anomaly score to obstacles on the drivable area.

The chain, per camera frame (every step is a small module of this package; none imports ROS):

1. :mod:`~pebal_core.alarms.region`: the region of interest, the drivable area from the predicted
   road (optionally sidewalk) plus what the road encloses;
2. :mod:`~pebal_core.alarms.operating_point`: the score threshold together with the alarm settings
   it was chosen with (region, smallest obstacle, persistence), chosen on validation data by a
   policy (``tpr95``, ``fpr:<x>``, ``fa:<x>``), stored in the model's metadata and resolved from it
   and the user's overrides in one place;
3. :mod:`~pebal_core.alarms.persistence`: a k-of-n temporal filter with hysteresis over the newest
   frames, in image space and on the ground grid;
4. :mod:`~pebal_core.alarms.obstacles`: connected alarm components above a minimum size become
   obstacles with a score, a box, a pixel count and (with intrinsics and the mount) a ground
   position and distance;
5. :mod:`~pebal_core.alarms.pipeline`: the four steps as one per-frame call on the frame's context
   (:mod:`~pebal_core.alarms.frame`: image, labels, score, operating point, intrinsics; used by the
   ROS node, ``pebal predict``, the bag scorer and the benchmark), and
   :func:`pebal_core.visualize.alarm_overlay` draws the result.
"""
