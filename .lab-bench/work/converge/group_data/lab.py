registry_mirror = '198.18.0.3:5000'
apt_check_valid_until = False
cache_dir = '/work/main/.lab-bench/work/converge/cache'
model = {'name': 'base', 'path': '/work/main/.lab-bench/work/models/base.gguf', 'sha256': 'c54ff9299e475a91f65bf9b83d102787f85225ccfacefb4f148fa96c55ff3269'}
