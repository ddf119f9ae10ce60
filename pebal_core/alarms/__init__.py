"""Alarms a driver can trust: from a per-pixel anomaly score to obstacles on the drivable area.

The chain, per camera frame (every step is a small module of this package; none imports ROS):

1. :mod:`~pebal_core.alarms.region`: the region of interest, the drivable area from the predicted
   road (optionally sidewalk) plus what the road encloses;
2. :mod:`~pebal_core.alarms.ego_mask`: the pixels of the own car (bonnet, windscreen frame,
   rectification border), which never alarm and are left out of the region and of obstacles
   (:mod:`~pebal_core.alarms.ego_estimate` finds them from a camera's frames);
3. :mod:`~pebal_core.alarms.operating_point`: the score threshold together with the alarm settings
   it was chosen with (region, ego mask, smallest obstacle, persistence), chosen on validation data
   by a policy (``tpr95``, ``fpr:<x>``, ``fa:<x>``, ``obstacles:<x>``), stored in the model's
   metadata and resolved from it and the user's overrides in one place;
4. :mod:`~pebal_core.alarms.persistence`: a k-of-n temporal filter with hysteresis over the newest
   frames, in image space and on the ground grid;
5. :mod:`~pebal_core.alarms.obstacles`: connected alarm components above a minimum size become
   obstacles with a score, a box, a pixel count and (with intrinsics and the mount) a ground
   position and distance;
6. :mod:`~pebal_core.alarms.pipeline`: the steps as one per-frame call on the frame's context
   (:mod:`~pebal_core.alarms.frame`: image, labels, score, operating point, intrinsics, ego mask;
   used by the ROS node, ``pebal predict``, ``pebal eval``, the bag scorer and the benchmarks),
   and :func:`pebal_core.visualize.alarm_overlay` draws the result.

:mod:`~pebal_core.alarms.frame_counts` counts what the chain does against labels, per obstacle
(``pebal eval``'s obstacle level, the ``obstacles:<x>`` policy, the demo's scorer).
"""
