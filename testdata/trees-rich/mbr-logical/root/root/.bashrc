# ~/.bashrc
export PS1='\h:\w\$ '
